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


def scan(folder: str | os.PathLike) -> list[ModelEntry]:
    """Every `*.safetensors` of `folder` (not its subfolders), sorted by name."""
    from ..archs.detect import detect
    from ..archs.header import HeaderError, read_header
    from ..kinds.adapter import is_adapter

    out = []
    for p in sorted(Path(folder).glob("*.safetensors"), key=lambda p: p.name.lower()):
        if not p.is_file():
            continue
        size = p.stat().st_size
        try:
            h = read_header(str(p))
            short = header_hash(p)
        except (HeaderError, OSError, ValueError) as exc:
            out.append(ModelEntry(p.name, p, "?", size, "-" * 8, problem=getattr(exc, "message", str(exc))))
            continue
        if is_adapter(h.tensors):
            out.append(ModelEntry(p.name, p, "LoRA", size, short, adapter=True))
            continue
        d = detect(h)
        out.append(ModelEntry(p.name, p, d.arch.name, size, short, confident=d.confident))
    return out
