"""A model source's tensor as a plan expression: a stored tensor is a `Read` of its file, a derived
one an `Op("source.<op>")` over its parts (sources/model.py, runtime/plan.py SOURCE_OPS)."""

from __future__ import annotations

from ..runtime.plan import InputFile, KeyExpr, Op, Read
from ..sources import Derived, Source, Stored, Tensor


def input_files(src: Source, name: str) -> list[InputFile]:
    """The plan inputs a source is read from: one per file, offsets absolute."""
    return [InputFile(f.path, 0, f.size, name) for f in src.files]


def source_expr(base: int, t: Tensor) -> KeyExpr:
    """`t` of a source whose first file is plan input `base`."""
    if isinstance(t, Stored):
        return Read(base + t.file, t.name, t.dtype, tuple(t.shape), t.begin, t.end)
    assert isinstance(t, Derived)
    args = tuple(source_expr(base, a) for a in t.args)
    if t.op == "convert":  # reads are converted to the compute dtype anyway
        return args[0]
    hypers: tuple = (("shape", tuple(t.shape)),) if t.op == "reshape" else ()
    return Op("source." + t.op, args, hypers)
