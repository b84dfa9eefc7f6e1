"""The single safetensors file: its header (archs/header.py) seen as a source."""

from __future__ import annotations

import os

from ..archs.header import HeaderError, read_header
from .model import Source, SourceError, SourceFile, Stored

SUFFIXES = (".safetensors", ".sft")


def claims(path: str) -> bool:
    return path.lower().endswith(SUFFIXES) and not os.path.isdir(path)


def stored_tensors(path: str, file_index: int) -> tuple[SourceFile, dict[str, Stored], dict[str, str]]:
    """One safetensors file's tensors with absolute byte ranges, as file `file_index` of a source."""
    try:
        h = read_header(path)
    except HeaderError as e:
        raise SourceError(e.path, e.message) from None
    tensors = {name: Stored(m.dtype, m.shape, file_index, h.data_start + m.begin,
                            h.data_start + m.end, name)
               for name, m in h.tensors.items()}
    return SourceFile(os.path.abspath(path), h.size, h.mtime_ns), tensors, dict(h.metadata)


def open_file(path: str) -> Source:
    f, tensors, metadata = stored_tensors(path, 0)
    return Source(os.path.abspath(path), "safetensors", (f,), tensors, metadata)
