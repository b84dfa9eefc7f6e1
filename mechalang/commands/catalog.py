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
import os
import struct
from dataclasses import dataclass
from pathlib import Path

from ..paths import models_dirs

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
    from ..sources import name_suffixes
    from ..sources.registry import kinds

    suffixes = tuple(name_suffixes()) + (".sft", ".pth")
    folder_kinds = [k for k in kinds() if k.folder]
    out = []
    for p in Path(folder).iterdir():
        if p.name.startswith("."):
            continue
        if p.is_file() and p.name.lower().endswith(suffixes):
            out.append(p)
        elif p.is_dir() and any(k.claims(str(p)) for k in folder_kinds):
            out.append(p)
    return sorted(out, key=lambda p: p.name.lower())


def scan(folder: str | os.PathLike) -> list[ModelEntry]:
    """Every model source of `folder` (files, and model folders; not inside other folders),
    sorted by name."""
    from ..archs.detect import detect_keys
    from ..kinds.adapter import is_adapter
    from ..sources import SourceError, open_source

    out = []
    for p in _candidates(Path(folder)):
        try:
            src = open_source(str(p))
            short = header_hash(p) if src.kind == "safetensors" else source_hash(src)
        except (SourceError, OSError, ValueError) as exc:
            size = p.stat().st_size if p.is_file() else 0
            out.append(ModelEntry(p.name, p, "?", size, "-" * 8, problem=getattr(exc, "message", str(exc))))
            continue
        if is_adapter(src.tensors):
            out.append(ModelEntry(p.name, p, "LoRA", src.size, short, adapter=True, kind=src.kind,
                                  keys=len(src.tensors)))
            continue
        d = detect_keys(list(src.tensors))
        out.append(ModelEntry(p.name, p, d.arch.name, src.size, short, confident=d.confident,
                              kind=src.kind, keys=len(src.tensors)))
    return out
