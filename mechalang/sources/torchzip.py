"""`.ckpt` / `.pt` / `.pth` / `.bin` files written by `torch.save` (the zip format), read without torch
and without executing the pickle.

`torch.save` writes a zip archive of *stored* (uncompressed) entries: `<name>/data.pkl`, a pickle of
the saved object in which every tensor is `torch._utils._rebuild_tensor_v2(storage, offset, size,
stride, ...)` and every storage a persistent id `("storage", <storage class>, "<key>", "<device>",
numel)` whose bytes are the entry `<name>/data/<key>`. The pickle is parsed by an unpickler whose
`find_class` answers only an allow-list (the tensor-rebuild functions, storage classes and dtypes,
`collections.OrderedDict`) with inert stand-ins: nothing named in the file is imported or called,
so a pickle that refers to anything else (`os.system`, a training callback's class) is refused with
the name it asked for. Each tensor's bytes are then an absolute byte range inside the archive.

Legacy torch files (torch before 1.6, or `torch.save(..., _use_new_zipfile_serialization=False)`)
are read the same way: the file is five pickles in a row (a magic number, the protocol version
1001, a dict saying the byte order, the saved object, the list of storage keys), then each storage
in that order as an 8-byte little-endian element count followed by its raw bytes. The object is
parsed by the same restricted unpickler; the storages are located by stepping over the counts
(a seek per storage, nothing else is read), so each tensor is again a byte range of the file.

Zip entries that are compressed (an archive re-packed by a zip tool; torch.save never compresses)
are refused with the reason: a tensor inside a deflate stream is no byte range, and reading one
would mean inflating the entry, which the streaming reader does not do.
"""

from __future__ import annotations

import io
import os
import pickle
import struct
import zipfile
from dataclasses import dataclass

from ..dtypes import element_size
from .model import Derived, Source, SourceError, SourceFile, Stored, Tensor

SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")

#: torch storage classes -> safetensors dtype names (UntypedStorage is bytes, typed by the dtype arg)
_STORAGES = {
    "DoubleStorage": "F64", "FloatStorage": "F32", "HalfStorage": "F16", "BFloat16Storage": "BF16",
    "LongStorage": "I64", "IntStorage": "I32", "ShortStorage": "I16", "CharStorage": "I8",
    "ByteStorage": "U8", "BoolStorage": "BOOL", "Float8_e4m3fnStorage": "F8_E4M3",
    "Float8_e5m2Storage": "F8_E5M2", "UntypedStorage": "U8",
}
#: torch dtype attributes -> safetensors dtype names (the dtype argument of _rebuild_tensor_v3)
_DTYPES = {
    "float64": "F64", "float32": "F32", "float16": "F16", "bfloat16": "BF16", "int64": "I64",
    "int32": "I32", "int16": "I16", "int8": "I8", "uint8": "U8", "bool": "BOOL",
    "float8_e4m3fn": "F8_E4M3", "float8_e5m2": "F8_E5M2",
}
_REBUILD = {"_rebuild_tensor_v2", "_rebuild_tensor_v3", "_rebuild_parameter",
            "_rebuild_parameter_with_state"}


def claims(path: str) -> bool:
    return path.lower().endswith(SUFFIXES) and os.path.isfile(path)


# ------------------------------------------------------------------------------------------------
# Inert stand-ins for what the pickle may name


@dataclass(frozen=True)
class _StorageType:
    dtype: str


@dataclass(frozen=True)
class _DType:
    name: str


@dataclass(frozen=True)
class _StorageRef:
    key: str
    dtype: str  # of its elements ("U8" for an untyped storage)
    numel: int


@dataclass(frozen=True)
class _TensorRef:
    storage: _StorageRef
    offset: int  # in elements
    shape: tuple[int, ...]
    stride: tuple[int, ...]
    dtype: str


class Refused(Exception):
    pass


def _rebuild_tensor(storage, offset, size, stride, *rest):
    if not isinstance(storage, _StorageRef):
        raise Refused("a tensor built from something that is not a stored tensor's data")
    dtype = storage.dtype
    if len(rest) >= 3 and isinstance(rest[2], _DType):  # _rebuild_tensor_v3(..., dtype)
        dtype = rest[2].name
    return _TensorRef(storage, int(offset), tuple(int(d) for d in size),
                      tuple(int(s) for s in stride), dtype)


def _rebuild_parameter(data, *rest):
    return data


def _ordered_dict(*args):
    import collections

    return collections.OrderedDict(*args)


class _Unpickler(pickle.Unpickler):
    def __init__(self, file):
        super().__init__(file)
        self.storages: dict[str, _StorageRef] = {}  # every storage the pickle refers to, by key

    def find_class(self, module: str, name: str):
        if module == "torch._utils" and name in _REBUILD:
            return _rebuild_parameter if name.startswith("_rebuild_parameter") else _rebuild_tensor
        if module in ("torch", "torch.storage") and name in _STORAGES:
            return _StorageType(_STORAGES[name])
        if module == "torch" and name in _DTYPES:
            return _DType(_DTYPES[name])
        if module == "collections" and name == "OrderedDict":
            return _ordered_dict
        raise Refused(f"its pickle refers to `{module}.{name}`, which is not a tensor or a plain "
                      f"container; loading it would run code from the file")

    def persistent_load(self, pid):
        # zip files: ("storage", type, key, location, numel); legacy files add view metadata,
        # None unless the storage is a view into another (which no torch since 1.0 writes)
        if (not isinstance(pid, tuple) or len(pid) not in (5, 6) or pid[0] != "storage"
                or not isinstance(pid[1], _StorageType) or (len(pid) == 6 and pid[5] is not None)):
            raise Refused(f"its pickle has a persistent id that is not a tensor storage: {pid!r:.80}")
        _, stype, key, _location, numel = pid[:5]
        ref = _StorageRef(str(key), stype.dtype, int(numel))
        self.storages[ref.key] = ref
        return ref


# ------------------------------------------------------------------------------------------------


def _entry_data_offset(f, info: zipfile.ZipInfo) -> int:
    """Absolute offset of a stored zip entry's bytes (after its local header)."""
    f.seek(info.header_offset)
    local = f.read(30)
    if len(local) != 30 or local[:4] != b"PK\x03\x04":
        raise ValueError("bad local header")
    name_len, extra_len = struct.unpack("<HH", local[26:30])
    return info.header_offset + 30 + name_len + extra_len


def _state_dict(obj) -> dict | None:
    """The dict of tensors in a saved object: itself, or its `state_dict` / `model` / `module`."""
    if not isinstance(obj, dict):
        return None
    if any(isinstance(v, _TensorRef) for v in obj.values()):
        return obj
    for name in ("state_dict", "model", "module", "model_state_dict", "params"):
        inner = obj.get(name)
        found = _state_dict(inner)
        if found is not None:
            return found
    return None


def open_file(path: str) -> Source:
    path = os.path.abspath(path)
    try:
        st = os.stat(path)
        with open(path, "rb") as f:
            magic = f.read(4)
            if magic != b"PK\x03\x04":
                return _open_legacy(path, f, st)
            try:
                zf = zipfile.ZipFile(f)
            except zipfile.BadZipFile as e:
                raise SourceError(path, f"not a readable zip archive ({e})") from None
            infos = {i.filename: i for i in zf.infolist()}
            pkls = [n for n in infos if n.endswith("/data.pkl") or n == "data.pkl"]
            if len(pkls) != 1:
                raise SourceError(path, "a zip archive without exactly one `data.pkl`: not a "
                                        "torch.save file")
            prefix = pkls[0][: -len("data.pkl")]
            order = infos.get(prefix + "byteorder")
            if order is not None and zf.read(order).strip() not in (b"little", b""):
                raise SourceError(path, "its tensors are stored big-endian; re-save it on a "
                                        "little-endian machine")
            try:
                obj = _Unpickler(io.BytesIO(zf.read(pkls[0]))).load()
            except Refused as r:
                raise SourceError(path, f"refused: {r}") from None
            except Exception as e:  # a broken pickle: anything the parser raises
                raise SourceError(path, f"its pickle cannot be read ({type(e).__name__}: "
                                        f"{str(e)[:120]})") from None
            sd = _tensors_dict(path, obj)
            tensors: dict[str, Tensor] = {}
            for name, ref in sd.items():
                if not isinstance(ref, _TensorRef):
                    continue  # non-tensor entries of a state dict (a step count, ...)
                tensors[str(name)] = _tensor(path, str(name), ref, *_zip_entry(path, f, infos, prefix, str(name), ref))
    except OSError as e:
        raise SourceError(path, f"cannot read: {e.strerror or e}") from None
    note = "zip" + (", nested state_dict" if sd is not obj else "")
    return Source(path, "torch", (SourceFile(path, st.st_size, st.st_mtime_ns),), tensors, {},
                  note=note)


def _tensors_dict(path: str, obj):
    """The dict of tensors in a loaded pickle (at its top or nested), or a SourceError."""
    sd = _state_dict(obj)
    if sd is None:
        raise SourceError(path, "holds no dict of tensors (looked at the top level and at `state_dict`, "
                                "`model`, `module`)")
    return sd


def _zip_entry(path, f, infos, prefix, name, ref: _TensorRef) -> tuple[int, int]:
    """(absolute offset, size in bytes) of the zip entry holding a tensor's storage."""
    info = infos.get(f"{prefix}data/{ref.storage.key}")
    if info is None:
        raise SourceError(path, f"tensor `{name}`: its data entry `data/{ref.storage.key}` is missing")
    if info.compress_type != zipfile.ZIP_STORED:
        method = {zipfile.ZIP_DEFLATED: "deflate", zipfile.ZIP_BZIP2: "bzip2", zipfile.ZIP_LZMA: "lzma"}.get(
            info.compress_type, f"method {info.compress_type}")
        raise SourceError(path, f"tensor `{name}`: its data entry is compressed ({method}), so it is no byte "
                                f"range of the file and cannot be streamed; re-save it with torch.save (which "
                                f"stores entries uncompressed) or as safetensors, or unpack and re-zip it "
                                f"with `zip -0`")
    return _entry_data_offset(f, info), info.file_size


# ------------------------------------------------------------------------------------------------
# Legacy (non-zip) files

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001
RESAVE = "re-save it with a current torch (`torch.save(torch.load(path), path)`) or as safetensors"


def _open_legacy(path: str, f, st) -> Source:
    f.seek(0)
    try:
        magic = _Unpickler(f).load()
    except Exception:
        magic = None
    if magic != LEGACY_MAGIC:
        raise SourceError(path, "not a torch file: neither a zip archive nor a legacy torch.save file")
    try:
        version, sys_info = _Unpickler(f).load(), _Unpickler(f).load()
    except Exception as e:
        raise SourceError(path, f"a legacy torch file whose header cannot be read ({type(e).__name__})") from None
    if version != LEGACY_PROTOCOL or not isinstance(sys_info, dict):
        raise SourceError(path, f"a legacy torch file of protocol {version!r}, not {LEGACY_PROTOCOL}; {RESAVE}")
    if not sys_info.get("little_endian", False):
        raise SourceError(path, "its tensors are stored big-endian; re-save it on a little-endian machine")
    up = _Unpickler(f)
    try:
        obj = up.load()
        keys = _Unpickler(f).load()
    except Refused as r:
        raise SourceError(path, f"refused: {r}") from None
    except Exception as e:
        raise SourceError(path, f"its pickle cannot be read ({type(e).__name__}: {str(e)[:120]})") from None
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise SourceError(path, "a legacy torch file without its list of storages")
    # Step over the storages, in the listed order, to find where each one's bytes are.
    where: dict[str, tuple[int, int]] = {}
    pos = f.tell()
    for key in keys:
        ref = up.storages.get(key)
        if ref is None:
            raise SourceError(path, f"storage `{key}` is listed but no tensor refers to it")
        f.seek(pos)
        head = f.read(8)
        if len(head) != 8:
            raise SourceError(path, f"storage `{key}` is missing: the file ends at byte {pos}")
        (count,) = struct.unpack("<q", head)
        size = element_size(ref.dtype) if ref.dtype in _DTYPES.values() else 1
        if count != ref.numel:
            raise SourceError(path, f"storage `{key}` holds {count} elements, its tensors say {ref.numel}")
        where[key] = (pos + 8, count * size)
        pos += 8 + count * size
    if pos > st.st_size:
        raise SourceError(path, f"truncated: its storages need {pos} bytes, the file has {st.st_size}")
    sd = _tensors_dict(path, obj)
    tensors: dict[str, Tensor] = {}
    for name, ref in sd.items():
        if isinstance(ref, _TensorRef):
            if ref.storage.key not in where:
                raise SourceError(path, f"tensor `{name}`: its storage `{ref.storage.key}` is not in the file")
            tensors[str(name)] = _tensor(path, str(name), ref, *where[ref.storage.key])
    note = "legacy torch.save" + (", nested state_dict" if sd is not obj else "")
    return Source(path, "torch", (SourceFile(path, st.st_size, st.st_mtime_ns),), tensors, {}, note=note)


def _tensor(path, name, ref: _TensorRef, base: int, entry_size: int) -> Tensor:
    """A tensor whose storage's bytes are [base, base + entry_size) of the file."""
    if ref.dtype not in _DTYPES.values():
        raise SourceError(path, f"tensor `{name}` has an unsupported dtype")
    size = element_size(ref.dtype)
    shape, stride = ref.shape, ref.stride
    numel = 1
    for d in shape:
        numel *= d
    transposed = False
    if numel > 1 and not _is_contiguous(shape, stride):
        if len(shape) == 2 and stride == (1, shape[0]):
            transposed = True  # a transposed view of a contiguous [cols, rows] tensor
        else:
            raise SourceError(path, f"tensor `{name}` is a non-contiguous view (shape "
                                    f"{list(shape)}, strides {list(stride)}); save "
                                    f"`.contiguous()` tensors")
    begin = base + ref.offset * size
    end = begin + numel * size
    if end > base + entry_size:
        raise SourceError(path, f"tensor `{name}` runs past the end of its data entry")
    if transposed:
        inner = Stored(ref.dtype, (shape[1], shape[0]), 0, begin, end, name)
        return Derived(ref.dtype, shape, "transpose", (inner,), name)
    return Stored(ref.dtype, shape, 0, begin, end, name)


def _is_contiguous(shape: tuple[int, ...], stride: tuple[int, ...]) -> bool:
    """Row-major without gaps (the stride of a dimension of size 1 does not matter)."""
    if len(stride) != len(shape):
        return False
    acc = 1
    for d, s in zip(reversed(shape), reversed(stride)):
        if d != 1 and s != acc:
            return False
        acc *= d
    return True
