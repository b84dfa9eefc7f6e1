"""What a model source is, as data: its files, its tensors (stored or derived) and its metadata.

Torch-free. A `Source` is built by a source kind's `open` from headers, indexes, configs and
pickles only; nothing here reads a tensor's data.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Union

from ..dtypes import element_size


class SourceError(Exception):
    """A model path that cannot be read as a source. `path` is the file at fault (a shard, an index,
    a config), `message` a sentence for the user."""

    def __init__(self, path: str, message: str):
        self.path = path
        self.message = message
        super().__init__(f"{path}: {message}")


@dataclass(frozen=True)
class SourceFile:
    path: str  # absolute
    size: int  # bytes, when opened (a different size at run time is an error)
    mtime_ns: int


@dataclass(frozen=True)
class Stored:
    """A tensor whose bytes lie, contiguous and little-endian, in `files[file]` at the absolute byte
    range [begin, end)."""

    dtype: str  # safetensors dtype name
    shape: tuple[int, ...]
    file: int
    begin: int
    end: int
    name: str = ""  # its name where it is stored (for messages and plans)

    @property
    def nbytes(self) -> int:
        return self.end - self.begin

    @property
    def numel(self) -> int:
        return _numel(self.shape)


#: The closed set of transforms a derived tensor may apply, with what `params` each takes:
#:   "cat"        args concatenated along dim 0 (fused q/k/v, qkv)                 -
#:   "reshape"    one arg, same elements, new shape (linear [o,i] <-> conv [o,i,1,1])  -
#:   "transpose"  one 2-D arg transposed                                            -
#:   "mul"        args[0] * args[1], args[1] broadcast (a scalar or per-row scale)   -
#:   "convert"    one arg read and converted to `dtype` (fp8 dequantised)           -
#: The derived tensor's own `dtype` and `shape` are what the model's key set says.
DERIVE_OPS = ("cat", "reshape", "transpose", "mul", "convert")


@dataclass(frozen=True)
class Derived:
    """A tensor computed, per key at run time, from stored ones by a small transform."""

    dtype: str
    shape: tuple[int, ...]
    op: str  # one of DERIVE_OPS
    args: tuple["Tensor", ...]
    name: str = ""

    def __post_init__(self):
        if self.op not in DERIVE_OPS:
            raise ValueError(f"unknown derived-tensor transform {self.op!r}")

    @property
    def numel(self) -> int:
        return _numel(self.shape)

    @property
    def nbytes(self) -> int:
        return self.numel * element_size(self.dtype)

    def stored(self) -> list[Stored]:
        """Every stored tensor it is computed from, in order."""
        out: list[Stored] = []
        stack: list[Tensor] = [self]
        while stack:
            t = stack.pop()
            if isinstance(t, Stored):
                out.append(t)
            else:
                stack.extend(reversed(t.args))
        return out


Tensor = Union[Stored, Derived]


@dataclass(frozen=True)
class Source:
    """What a model path names.

    `tensors` is the model's key set (names as the checkpoint spells them), in storage order.
    Keys a kind hides (scaled-fp8 scales, the `scaled_fp8` marker) are not in it.
    """

    path: str  # what the user named, absolute
    kind: str  # a registered source kind's name: "safetensors", "hf", "torch", ...
    files: tuple[SourceFile, ...]
    tensors: dict[str, Tensor] = field(hash=False, compare=False)
    metadata: dict[str, str] = field(default_factory=dict, hash=False, compare=False)
    # What a folder source carries besides weights (config.json, tokenizer files, ...): file names
    # relative to `path`, copied by outputs that follow this source's layout.
    extra_files: tuple[str, ...] = ()
    # A short phrase for listings: "3 shards", "SD .ckpt (zip)", "scaled fp8", ...
    note: str = ""
    # The architecture the source's own layout says it is (a diffusers pipeline's class), whose
    # names its keys were given: then nothing needs detecting from the names. None: detect.
    arch: str | None = None

    @property
    def size(self) -> int:
        """Bytes on disk over all its files."""
        return sum(f.size for f in self.files)

    @property
    def mtime_ns(self) -> int:
        return max((f.mtime_ns for f in self.files), default=0)

    def keys(self) -> list[str]:
        return list(self.tensors)


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n
