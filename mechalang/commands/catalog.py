"""The models folder as the form lists it: every `*.safetensors` with its architecture, size and a
short hash, read from the headers only (no tensor is read, torch is not imported).

The hash is the first 8 hex digits of the sha256 of the file's *header* bytes (the 8-byte length
and the JSON header) and of the first 64 KiB of tensor data, not of the whole file: instant for any
size. It tells apart files with different keys, shapes, dtypes or metadata, and in practice files
that differ in their values (two files equal in their first 64 KiB of data but not after would
share it). The full sha256 is what `mecha run --hash` records.
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


def scan(folder: str | os.PathLike, *, confine: bool = False) -> list[ModelEntry]:
    """Every `*.safetensors` of `folder` (not its subfolders), sorted by name.

    What was learnt about a file is cached (`catalog.json` in the cache folder) under its path, size
    and modification time, so a folder of large models is read once, not at every start of a form:
    the next start lists it without reading a header.

    confine: a link that leads out of `folder` is listed with a problem and not read (the web
    server reads nothing outside the folders it was started with).
    """
    cache = _Cache.load()
    root = Path(folder).resolve()
    out = []
    for p in sorted(Path(folder).glob("*.safetensors"), key=lambda p: p.name.lower()):
        if confine and root not in p.resolve().parents:
            out.append(ModelEntry(p.name, p, "?", 0, "-" * 8, problem="a link out of the models folder: not read"))
            continue
        try:
            st = p.stat()
        except OSError:
            continue
        if not p.is_file():
            continue
        entry = cache.get(p, st)
        if entry is None:
            entry = _entry(p, st.st_size)
            cache.put(p, st, entry)
        out.append(entry)
    cache.save()
    return out


def _entry(p: Path, size: int) -> ModelEntry:
    """What the form shows of one file, read from its header."""
    from ..archs.detect import detect
    from ..archs.header import HeaderError, read_header
    from ..kinds.adapter import is_adapter

    try:
        h = read_header(str(p))
        short = header_hash(p)
    except (HeaderError, OSError, ValueError) as exc:
        return ModelEntry(p.name, p, "?", size, "-" * 8, problem=getattr(exc, "message", str(exc)))
    if is_adapter(h.tensors):
        return ModelEntry(p.name, p, "LoRA", size, short, adapter=True)
    d = detect(h)
    return ModelEntry(p.name, p, d.arch.name, size, short, confident=d.confident)


class _Cache:
    """The catalog cache: {"key": what the answers depend on, "files": {path: [size, mtime_ns,
    arch, short_hash, adapter, confident, problem]}}. Unreadable, stale or unwritable is the same as
    empty: the cache only ever saves time."""

    FIELDS = ("arch", "short_hash", "adapter", "confident", "problem")

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

    def get(self, p: Path, st: os.stat_result) -> ModelEntry | None:
        row = self.files.get(str(p))
        if not isinstance(row, list) or len(row) != 2 + len(self.FIELDS) or row[:2] != [st.st_size, st.st_mtime_ns]:
            return None
        return ModelEntry(p.name, p, size=st.st_size, **dict(zip(self.FIELDS, row[2:])))

    def put(self, p: Path, st: os.stat_result, e: ModelEntry) -> None:
        self.files[str(p)] = [st.st_size, st.st_mtime_ns, *(getattr(e, f) for f in self.FIELDS)]
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
