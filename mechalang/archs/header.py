"""Reading and validating a safetensors header, without reading any tensor.

A safetensors file is: 8 bytes (little-endian u64) giving the header length N, N bytes of JSON
(`{name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {str: str}}`), then the data
section, where offsets are relative to its start. Only the first 8 + N bytes are read.

Every way a file can be broken becomes a `HeaderError` with a message meant for the user.
"""

from __future__ import annotations

import json
import os
import stat
import struct
from dataclasses import dataclass, field

from ..dtypes import DTYPES, byte_size
from ..units import format_bytes

#: The largest header read. Real headers are well under 1 MB (SDXL's is ~200 KB).
MAX_HEADER_BYTES = 100_000_000

@dataclass(frozen=True)
class TensorMeta:
    dtype: str              # as safetensors writes it: F16, BF16, F32, I64, ...
    shape: tuple[int, ...]
    begin: int              # offsets relative to the data section
    end: int

    @property
    def nbytes(self) -> int:
        return self.end - self.begin

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


@dataclass(frozen=True)
class Header:
    path: str
    size: int
    mtime_ns: int
    data_start: int                       # absolute offset of the data section (8 + N)
    tensors: dict[str, TensorMeta] = field(hash=False)   # in file (offset) order
    metadata: dict[str, str] = field(hash=False)

    def keys(self) -> list[str]:
        return list(self.tensors)


class HeaderError(Exception):
    """A file that is not a readable safetensors file. `message` is meant for the user."""

    def __init__(self, path: str, message: str):
        self.path = path
        self.message = message
        super().__init__(f"{path}: {message}")


_cache: dict[tuple[str, int, int], Header] = {}


def clear_cache() -> None:
    _cache.clear()


def read_header(path: str) -> Header:
    """The validated header of the safetensors file at `path` (cached while the file is unchanged)."""
    path = os.fspath(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise HeaderError(path, "no such file") from None
    except PermissionError:
        raise HeaderError(path, "permission denied") from None
    except OSError as e:
        raise HeaderError(path, f"cannot read: {e.strerror or e}") from None
    if stat.S_ISDIR(st.st_mode):
        raise HeaderError(path, "is a directory")
    if not stat.S_ISREG(st.st_mode):
        raise HeaderError(path, "is not a regular file")

    real = os.path.realpath(path)
    cache_key = (real, st.st_size, st.st_mtime_ns)
    cached = _cache.get(cache_key)
    if cached is not None:
        return cached if cached.path == path else _with_path(cached, path)

    try:
        with open(path, "rb") as f:
            header = _parse(path, f, st.st_size, st.st_mtime_ns)
    except PermissionError:
        raise HeaderError(path, "permission denied") from None
    except IsADirectoryError:
        raise HeaderError(path, "is a directory") from None
    except OSError as e:
        raise HeaderError(path, f"cannot read: {e.strerror or e}") from None
    _cache[cache_key] = header
    return header


def _with_path(h: Header, path: str) -> Header:
    return Header(path, h.size, h.mtime_ns, h.data_start, h.tensors, h.metadata)


def _parse(path: str, f, size: int, mtime_ns: int) -> Header:
    if size == 0:
        raise HeaderError(path, "not a safetensors file: the file is empty")
    if size < 8:
        raise HeaderError(path, f"not a safetensors file: it is only {format_bytes(size)} long")
    (n,) = struct.unpack("<Q", f.read(8))
    if n > size - 8:
        raise HeaderError(path, f"not a safetensors file: header length {n} is larger than the "
                                f"file ({format_bytes(size)})")
    if n > MAX_HEADER_BYTES:
        raise HeaderError(path, f"not a safetensors file: header length {n} is over the "
                                f"{format_bytes(MAX_HEADER_BYTES)} limit")
    if n < 2:
        raise HeaderError(path, f"not a safetensors file: header length {n} is too short")
    raw = f.read(n)
    if len(raw) != n:
        raise HeaderError(path, "the file is shorter than its header says (file is truncated?)")
    data_start = 8 + n
    data_len = size - data_start

    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise HeaderError(path, f"header is not valid UTF-8 at byte {e.start}") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        pos = len(text[: e.pos].encode("utf-8"))
        raise HeaderError(path, f"header is not valid JSON at byte {pos}") from None
    except RecursionError:
        raise HeaderError(path, "header is not valid JSON: nested too deeply") from None
    if not isinstance(doc, dict):
        raise HeaderError(path, f"header is not a JSON object (it is {_json_kind(doc)})")

    for name in doc:  # JSON allows lone surrogates (`\ud800`); tensor names are Unicode text
        _check_text(path, name, "a tensor name")
    metadata: dict[str, str] = {}
    raw_meta = doc.get("__metadata__")
    if raw_meta is not None:
        if not isinstance(raw_meta, dict) or not all(isinstance(v, str) for v in raw_meta.values()):
            raise HeaderError(path, "header `__metadata__` is not a map of strings")
        for k, v in raw_meta.items():
            _check_text(path, k, "a metadata key")
            _check_text(path, v, f"the metadata value of `{k}`")
        metadata = dict(raw_meta)

    entries: list[tuple[str, TensorMeta]] = []
    for name, info in doc.items():
        if name == "__metadata__":
            continue
        entries.append((name, _tensor(path, name, info, data_len)))

    # The tensors must tile the data section exactly, as the safetensors library requires: in
    # file order (zero-length tensors before a tensor starting at the same offset), each starts
    # where the previous one ended, and the last ends where the file does.
    entries.sort(key=lambda e: (e[1].begin, e[1].end))
    prev_name, pos = None, 0
    for name, t in entries:
        if t.begin < pos:
            raise HeaderError(path, f"tensor `{name}`: data offsets [{t.begin}, {t.end}] overlap "
                                    f"`{prev_name}`")
        if t.begin > pos:
            after = f"after `{prev_name}`" if prev_name is not None else "at the start of the data"
            raise HeaderError(path, f"tensor `{name}`: data offsets [{t.begin}, {t.end}] leave "
                                    f"{t.begin - pos} bytes {after} that no tensor covers")
        prev_name, pos = name, t.end
    if pos != data_len:
        what = "the header lists no tensor" if not entries else f"its tensors end at byte {pos}"
        raise HeaderError(path, f"the data section has {data_len - pos} bytes no tensor covers: "
                                f"{what} but the data is {data_len} bytes long (extra bytes at the end?)")

    return Header(path, size, mtime_ns, data_start, dict(entries), metadata)


def _check_text(path: str, text: str, what: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        shown = text.encode("utf-8", "backslashreplace").decode("ascii", "replace")
        raise HeaderError(path, f"{what} (`{shown}`) is not valid Unicode: it holds a lone surrogate "
                                f"U+{ord(text[e.start]):04X}") from None


def _json_kind(v) -> str:
    if isinstance(v, list):
        return "a list"
    if isinstance(v, str):
        return "a string"
    if isinstance(v, bool):
        return "a boolean"
    if isinstance(v, (int, float)):
        return "a number"
    if v is None:
        return "null"
    return type(v).__name__


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _tensor(path: str, name: str, info, data_len: int) -> TensorMeta:
    if not isinstance(info, dict):
        raise HeaderError(path, f"tensor `{name}`: entry is not a JSON object")
    for fld in ("dtype", "shape", "data_offsets"):
        if fld not in info:
            raise HeaderError(path, f"tensor `{name}` has no `{fld}`")
    dtype = info["dtype"]
    if not isinstance(dtype, str) or dtype not in DTYPES:
        shown = dtype if isinstance(dtype, str) else json.dumps(dtype)
        raise HeaderError(path, f"tensor `{name}` has unknown dtype `{shown}`")
    shape = info["shape"]
    if not isinstance(shape, list) or not all(_is_int(d) and d >= 0 for d in shape):
        raise HeaderError(path, f"tensor `{name}` has an invalid shape {json.dumps(shape)}")
    offsets = info["data_offsets"]
    if (not isinstance(offsets, list) or len(offsets) != 2
            or not all(_is_int(o) and o >= 0 for o in offsets)):
        raise HeaderError(path, f"tensor `{name}` has invalid data offsets {json.dumps(offsets)}")
    begin, end = offsets
    if begin > end:
        raise HeaderError(path, f"tensor `{name}`: data offsets [{begin}, {end}] are not in order")
    expected = byte_size(dtype, tuple(shape))
    if expected != end - begin:
        shape_txt = "[" + ", ".join(str(d) for d in shape) + "]"
        what = f"{expected} bytes" if expected is not None else "not a whole number of bytes"
        raise HeaderError(path, f"tensor `{name}`: shape {shape_txt} × {dtype} is {what}, but its "
                                f"data offsets [{begin}, {end}] span {end - begin} bytes")
    if end > data_len:
        raise HeaderError(path, f"tensor `{name}`: data offsets [{begin}, {end}] run past the end "
                                f"of the file (file is truncated?)")
    return TensorMeta(dtype, tuple(shape), begin, end)
