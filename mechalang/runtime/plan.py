"""The key plan: what the streaming backend executes. Torch-free: lowering (graph/lower.py) builds it
in the front end, the executor runs it.

For every output file, the plan lists every output tensor in file order with its exact dtype,
shape and byte offsets, and a per-key expression saying how to compute it:

    Read(source, key)                 the tensor `key` of input file `sources[source]`
    Op(op, args, hypers)              a built-in operator or a registered merge method applied to
                                      the values of `args`, with hyperparameters already resolved
                                      to plain scalars for this key

Expressions are frozen and compared structurally, so the same sub-expression appearing in several
outputs for one key is one object to memoize: the backend computes it once.

Built-in operators (everything else names a method in `mechalang.methods.REGISTRY`):
    "add"    a + b
    "sub"    a - b
    "scale"  a * factor           (hyper `factor`)
    "adapter"  an adapter's delta for one key from its tensors (and the base weight, last, for
             kinds that need it), by the model kinds' formulas (kinds/apply.py)
    "source.cat"        a model source's derived tensor (sources/model.py DERIVE_OPS): args
    "source.reshape"    concatenated along dim 0; one arg reshaped to hyper `shape`; one 2-D arg
    "source.transpose"  transposed; args[0] * args[1] (broadcast). ("convert" needs no op: every
    "source.mul"        float read is converted to the compute dtype.)
    "source.rows"       rows [start, stop) of dim 0 of its one arg: a piece of a key an output
                        stores apart (a diffusers folder's q/k/v of a fused in_proj)

Each file of a model source is one `InputFile`; a single safetensors file has data_start = its
data section's offset, a source's files have data_start 0 and absolute `Read` offsets.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Union

from ..diagnostics import Span
from ..dtypes import element_size
from ..kinds.export import OPS as LORA_OPS

BUILTIN_OPS = ("add", "sub", "scale")  # element-wise
ADAPTER_OP = "adapter"
SOURCE_OPS = ("source.cat", "source.reshape", "source.transpose", "source.mul", "source.rows")
ENGINE_OPS = (ADAPTER_OP,) + LORA_OPS + SOURCE_OPS  # adapters/sources in, LoRA factors out


@dataclass(frozen=True)
class InputFile:
    path: str
    data_start: int  # byte offset of the data section (8 + header length)
    size: int  # file size in bytes when planned (a changed size at run time is an error)
    name: str = ""  # how the recipe calls it (its let-name, or the file stem)


@dataclass(frozen=True)
class Read:
    source: int
    key: str
    dtype: str  # dtype in the input file (safetensors name)
    shape: tuple[int, ...]
    begin: int  # offsets relative to the input's data section
    end: int


@dataclass(frozen=True)
class Op:
    op: str
    args: tuple["KeyExpr", ...]
    hypers: tuple[tuple[str, object], ...] = ()
    origin: Span | None = field(default=None, compare=False, repr=False)


KeyExpr = Union[Read, Op]


@dataclass(frozen=True)
class OutTensor:
    key: str
    expr: KeyExpr
    dtype: str  # safetensors dtype written
    shape: tuple[int, ...]
    begin: int  # offsets relative to the output's data section
    end: int
    # Tensors of one group are computed as one job (a LoRA module's up and down share their SVD);
    # "" means the key itself.
    group: str = ""

    @property
    def nbytes(self) -> int:
        return self.end - self.begin


@dataclass(frozen=True)
class OutputPlan:
    path: str
    tensors: tuple[OutTensor, ...]
    metadata: tuple[tuple[str, str], ...] = ()
    # Small text files written beside the output, just before it appears (a PEFT adapter's
    # adapter_config.json): (file name, text).
    sidecars: tuple[tuple[str, str], ...] = ()
    # A LoRA with dynamic ranks: planned at the largest rank, trimmed to each module's `alpha` (the
    # rank its factorization kept) before the file appears.
    trim_lora: bool = False
    # For a file of a folder output (a shard of `as hf`): that folder's final path (a FolderOutput
    # of the plan); `path` is inside it, possibly in a subfolder (`unet/...`). The file is written
    # at the same place inside the folder's temporary copy.
    folder: str = ""

    def header_bytes(self) -> bytes:
        """The safetensors header (length prefix included), padded to 8 bytes."""
        return encode_header(self.tensors, dict(self.metadata))

    @property
    def data_bytes(self) -> int:
        return max((t.end for t in self.tensors), default=0)


@dataclass(frozen=True)
class FolderOutput:
    """A folder written as a whole (`as hf`): its OutputPlans (those whose `folder` is `path`), small
    text files and files copied from an input, all made in a temporary folder beside it that is
    renamed onto `path` only when everything is written."""

    path: str  # the final folder, absolute
    files: tuple[tuple[str, str], ...] = ()  # (name relative to the folder, text)
    copies: tuple[tuple[str, str], ...] = ()  # (source file, name relative to the folder)


@dataclass(frozen=True)
class Plan:
    inputs: tuple[InputFile, ...]
    outputs: tuple[OutputPlan, ...]
    precision: str = "fp32"  # "fp32" | "fp64": the dtype arithmetic runs in
    folders: tuple[FolderOutput, ...] = ()


def layout(entries: list[tuple]) -> tuple[OutTensor, ...]:
    """Assign consecutive offsets to (key, expr, dtype, shape[, group]) entries, in the order given."""
    out = []
    pos = 0
    for key, expr, dtype, shape, *group in entries:
        n = element_size(dtype)
        for d in shape:
            n *= d
        out.append(OutTensor(key, expr, dtype, tuple(shape), pos, pos + n, group[0] if group else ""))
        pos += n
    return tuple(out)


def encode_header(tensors: tuple[OutTensor, ...], metadata: dict[str, str]) -> bytes:
    obj: dict[str, object] = {}
    if metadata:
        obj["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    for t in tensors:
        obj[t.key] = {"dtype": t.dtype, "shape": list(t.shape), "data_offsets": [t.begin, t.end]}
    raw = json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    raw += b" " * (-len(raw) % 8)
    return len(raw).to_bytes(8, "little") + raw
