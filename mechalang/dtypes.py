"""Every tensor dtype mechalang knows, in one table: the safetensors name, the size, whether it is a
float, the torch dtype it maps to, and whether merges can compute with it.

The header reader, the checker, the planner, the runtime and the synthetic-model writer all read
this table; none keeps a list of its own. Torch-free: the torch dtype is named by its attribute
(`"float8_e4m3fn"`), which only the runtime looks up.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DType:
    name: str  # as safetensors writes it: F16, BF16, F8_E4M3, I64, ...
    bits: int  # per element
    is_float: bool
    torch_name: str  # the attribute of the `torch` module
    # Whether mechalang can read, compute with and write tensors of this dtype. The others are
    # valid safetensors dtypes that a header may contain; `mecha check` refuses them by name.
    supported: bool = True

    @property
    def size(self) -> int:
        """Bytes per element (dtypes of fewer than 8 bits are unsupported, so this is exact for
        every supported dtype)."""
        return max(1, self.bits // 8)


_TABLE = (
    DType("F64", 64, True, "float64"),
    DType("F32", 32, True, "float32"),
    DType("F16", 16, True, "float16"),
    DType("BF16", 16, True, "bfloat16"),
    DType("F8_E4M3", 8, True, "float8_e4m3fn"),
    DType("F8_E5M2", 8, True, "float8_e5m2"),
    DType("F8_E4M3FNUZ", 8, True, "float8_e4m3fnuz", supported=False),
    DType("F8_E5M2FNUZ", 8, True, "float8_e5m2fnuz", supported=False),
    DType("F8_E8M0", 8, True, "float8_e8m0fnu", supported=False),
    DType("F6_E2M3", 6, True, "", supported=False),
    DType("F6_E3M2", 6, True, "", supported=False),
    DType("F4", 4, True, "", supported=False),
    DType("I64", 64, False, "int64"),
    DType("I32", 32, False, "int32"),
    DType("I16", 16, False, "int16"),
    DType("I8", 8, False, "int8"),
    DType("U64", 64, False, "uint64"),
    DType("U32", 32, False, "uint32"),
    DType("U16", 16, False, "uint16"),
    DType("U8", 8, False, "uint8"),
    DType("BOOL", 8, False, "bool"),
    DType("C64", 64, False, "complex64", supported=False),
)

#: safetensors name -> DType, for every dtype a valid safetensors header may contain.
DTYPES: dict[str, DType] = {d.name: d for d in _TABLE}

#: Floating dtypes (the ones merges interpolate).
FLOAT_DTYPES: frozenset[str] = frozenset(d.name for d in _TABLE if d.is_float)

#: Dtypes mechalang reads, computes with and writes.
SUPPORTED_DTYPES: frozenset[str] = frozenset(d.name for d in _TABLE if d.supported)

#: torch dtype names (as reference inventories write them) -> safetensors names.
TORCH_TO_SAFETENSORS: dict[str, str] = {d.torch_name: d.name for d in _TABLE if d.torch_name}

#: `export ... as NAME` -> the safetensors dtype written.
EXPORT_DTYPES: dict[str, str] = {
    "fp16": "F16", "bf16": "BF16", "fp32": "F32", "fp64": "F64",
    "fp8": "F8_E4M3", "fp8_e4m3": "F8_E4M3", "fp8_e5m2": "F8_E5M2",
}

#: The names users write for floating dtypes (synthetic models, `--dtype`) -> safetensors names.
USER_FLOAT_NAMES: dict[str, str] = {
    **EXPORT_DTYPES,
    "float16": "F16", "f16": "F16", "half": "F16",
    "bfloat16": "BF16",
    "float32": "F32", "f32": "F32", "float": "F32",
    "float64": "F64",
}


def byte_size(dtype: str, shape: tuple[int, ...]) -> int | None:
    """Bytes that `shape` elements of `dtype` take, or None for an unknown dtype or a sub-byte
    dtype whose elements do not fill whole bytes."""
    d = DTYPES.get(dtype)
    if d is None:
        return None
    n = 1
    for dim in shape:
        n *= dim
    total = n * d.bits
    if total % 8:
        return None
    return total // 8


def element_size(dtype: str) -> int:
    """Bytes per element of a supported dtype (KeyError for an unknown one)."""
    return DTYPES[dtype].size
