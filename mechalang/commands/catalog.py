"""The models folder as the form lists it: every model source in it (`*.safetensors`, `.ckpt`,
`.pt`, `.bin` files, Hugging Face and other model folders) with its kind, architecture, size and a
short hash, read from headers, indexes and pickles only (no tensor is read, torch is not imported).

The hash is the first 8 hex digits of the sha256 of the file's *header* bytes (the 8-byte length
and the JSON header) and of the first 64 KiB of tensor data, not of the whole file: instant for any
size. It tells apart files with different keys, shapes, dtypes or metadata, and in practice files
that differ in their values (two files equal in their first 64 KiB of data but not after would
share it). For another source kind it is the sha256 of its tensors' names, dtypes and shapes and
of the first 64 KiB of its first file. The full sha256 is what `mecha run --hash` records.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path

from ..paths import arch_files_key, cache_dir, models_dirs

MAX_HEADER = 100_000_000
DATA_SAMPLE = 64 * 1024


@dataclass(frozen=True)
class ModelEntry:
    name: str          # the file name, as the recipe and `mecha merge` write it
    path: Path
    arch: str          # `sd1`, `sdxl`, ..., `LoRA`, or `?` (with `problem`)
    size: int
    short_hash: str    # first 8 hex of sha256(header bytes)
    adapter: bool = False
    confident: bool = True
    problem: str | None = None
    kind: str = "safetensors"  # the source kind (sources.kinds())
    keys: int = 0

    @property
    def label(self) -> str:
        return f"{self.name}  [{self.arch}]"


def models_folder(given: str | os.PathLike | None = None) -> Path:
    """`--models-dir`, else the first folder of `MECHA_MODELS_DIR`, else the working folder."""
    dirs = models_dirs(given)
    return (dirs[0] if dirs else Path.cwd()).expanduser().resolve()


def header_hash(path: str | os.PathLike) -> str:
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise ValueError("too short for a safetensors file")
        (n,) = struct.unpack("<Q", head)
        if n > MAX_HEADER:
            raise ValueError("header too large")
        return hashlib.sha256(head + f.read(n) + f.read(DATA_SAMPLE)).hexdigest()[:8]


def source_hash(src) -> str:
    """The short hash of a source that is not one safetensors file (see the module's docstring)."""
    h = hashlib.sha256()
    for name, t in src.tensors.items():
        h.update(f"{name}\0{t.dtype}\0{list(t.shape)}\n".encode("utf-8", "backslashreplace"))
    if src.files:
        with open(src.files[0].path, "rb") as f:
            h.update(f.read(DATA_SAMPLE))
    return h.hexdigest()[:8]


def _candidates(folder: Path) -> list[Path]:
    """The files with a model suffix and the folders a folder source kind claims."""
    from ..sources import name_suffixes
    from ..sources.registry import kinds

    suffixes = tuple(name_suffixes()) + (".sft", ".pth")
    folder_kinds = [k for k in kinds() if k.folder]
    out = []
    try:
        children = list(Path(folder).iterdir())
    except OSError:
        return []
    for p in children:
        if p.name.startswith("."):
            continue
        if p.is_file() and p.name.lower().endswith(suffixes):
            out.append(p)
        elif p.is_dir() and any(k.claims(str(p)) for k in folder_kinds):
            out.append(p)
    return sorted(out, key=lambda p: p.name.lower())


def _stamp(p: Path) -> tuple[int, int]:
    """(size, mtime_ns) of a file; of a folder, the total size and latest time of its files."""
    if not p.is_dir():
        st = p.stat()
        return st.st_size, st.st_mtime_ns
    size, mtime = 0, p.stat().st_mtime_ns
    for e in os.scandir(p):
        if e.is_file():
            st = e.stat()
            size, mtime = size + st.st_size, max(mtime, st.st_mtime_ns)
    return size, mtime


def scan(folder: str | os.PathLike, *, confine: bool = False) -> list[ModelEntry]:
    """Every model source of `folder` (files, and model folders; not inside other folders), sorted
    by name.

    What was learnt about a source is cached (`catalog.json` in the cache folder) under its path,
    size and modification time (a folder's: its files' total and latest), so a folder of large
    models is read once, not at every start of a form: the next start lists it without reading a
    header.

    confine: a link that leads out of `folder` is listed with a problem and not read (the web
    server reads nothing outside the folders it was started with).
    """
    cache = _Cache.load()
    root = Path(folder).resolve()
    out = []
    for p in _candidates(Path(folder)):
        if confine and root not in p.resolve().parents:
            out.append(ModelEntry(p.name, p, "?", 0, "-" * 8, problem="a link out of the models folder: not read"))
            continue
        try:
            st = _stamp(p)
        except OSError:
            continue
        entry = cache.get(p, st)
        if entry is None:
            entry = _entry(p, st[0])
            cache.put(p, st, entry)
        out.append(entry)
    cache.save()
    return out


def _entry(p: Path, size: int) -> ModelEntry:
    """What the form shows of one source, read from its headers (indexes, pickles)."""
    from ..archs.detect import detect_keys
    from ..kinds.adapter import is_adapter
    from ..sources import SourceError, open_source

    try:
        src = open_source(str(p))
        short = header_hash(p) if src.kind == "safetensors" else source_hash(src)
    except (SourceError, OSError, ValueError) as exc:
        return ModelEntry(p.name, p, "?", size, "-" * 8, problem=getattr(exc, "message", str(exc)))
    if is_adapter(src.tensors):
        return ModelEntry(p.name, p, "LoRA", src.size, short, adapter=True, kind=src.kind,
                          keys=len(src.tensors))
    if src.arch:  # the source's own layout says (a diffusers pipeline's class)
        return ModelEntry(p.name, p, src.arch, src.size, short, confident=True, kind=src.kind,
                          keys=len(src.tensors))
    d = detect_keys(list(src.tensors), {k: t.shape for k, t in src.tensors.items()})
    return ModelEntry(p.name, p, d.arch.name, src.size, short, confident=d.confident, kind=src.kind,
                      keys=len(src.tensors))


class _Cache:
    """The catalog cache: {"key": what the answers depend on, "files": {path: [size, mtime_ns,
    arch, short_hash, adapter, confident, problem, kind, keys, size]}}. Unreadable, stale or unwritable is the same as
    empty: the cache only ever saves time."""

    FIELDS = ("arch", "short_hash", "adapter", "confident", "problem", "kind", "keys", "size")

    def __init__(self, path: Path, key: str, files: dict):
        self.path, self.key, self.files, self.dirty = path, key, files, False

    @classmethod
    def load(cls) -> "_Cache":
        from .._version import __version__

        path = cache_dir() / "catalog.json"
        key = f"{__version__}|{arch_files_key()}"
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            files = data["files"] if data.get("key") == key and isinstance(data.get("files"), dict) else {}
        except (OSError, ValueError, KeyError, TypeError):
            files = {}
        return cls(path, key, files)

    def get(self, p: Path, st: tuple[int, int]) -> ModelEntry | None:
        row = self.files.get(str(p))
        if not isinstance(row, list) or len(row) != 2 + len(self.FIELDS) or row[:2] != list(st):
            return None
        return ModelEntry(p.name, p, **dict(zip(self.FIELDS, row[2:])))

    def put(self, p: Path, st: tuple[int, int], e: ModelEntry) -> None:
        self.files[str(p)] = [*st, *(getattr(e, f) for f in self.FIELDS)]
        self.dirty = True

    def save(self) -> None:
        if not self.dirty:
            return
        files = {k: v for k, v in self.files.items() if os.path.exists(k)}  # forget deleted files
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps({"key": self.key, "files": files}), encoding="utf-8")
            os.replace(tmp, self.path)
        except OSError:
            try:
                tmp.unlink()
            except OSError:
                pass
