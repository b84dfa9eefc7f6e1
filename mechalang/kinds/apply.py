"""The engine's side of adapters: one target key's delta from its groups of adapter tensors.

Lowering writes each adapter-touched key as `Op("adapter", reads…, pieces=…, shape=…)` (see
`plan_hypers`); the executor calls `evaluate` with the tensors of those reads, already in the
compute dtype. A key updated by row slices (fused q/k/v) is assembled from its pieces.
"""

from __future__ import annotations

from typing import Any, Sequence

from ..methods._lazy import torch
from .adapter import Piece
from .registry import KINDS, KindContext

OP = "adapter"


def plan_hypers(key: str, pieces: Sequence[Piece], shape: tuple[int, ...], base: bool
                ) -> tuple[tuple[str, Any], ...]:
    """The Op's hyperparameters: for each piece (kind, its part names in argument order, rows,
    delta shape, params); the target shape; whether the last argument is the base weight. The
    Op's arguments are the pieces' tensors in that order."""
    spec = tuple((p.kind, tuple(part for part, _ in p.parts), p.rows, p.shape, p.params) for p in pieces)
    return (("base", base), ("key", key), ("modules", tuple(p.module for p in pieces)), ("pieces", spec),
            ("shape", tuple(shape)))


def evaluate(args: Sequence[Any], hypers: dict[str, Any]):
    """The delta of one target key."""
    shape = tuple(hypers["shape"])
    key = hypers["key"]
    base = args[-1] if hypers["base"] else None
    pos = 0
    out = None
    pieces = hypers["pieces"]
    for (kind, part_names, rows, piece_shape, params), module in zip(pieces, hypers["modules"]):
        spec = KINDS.get(kind)
        if spec is None:
            raise RuntimeError(f"unknown model kind `{kind}` (was its plugin loaded?)")
        parts = dict(zip(part_names, args[pos:pos + len(part_names)]))
        pos += len(part_names)
        piece_base = None
        if base is not None:
            piece_base = base if rows is None else base[rows[0]:rows[1]]
        delta = spec.delta(parts, KindContext(key, tuple(piece_shape), dict(params), piece_base))
        if tuple(delta.shape) != tuple(piece_shape):
            raise RuntimeError(f"model kind `{kind}` made a {list(delta.shape)} delta, expected {list(piece_shape)}")
        if not bool(torch.isfinite(delta).all()):  # a broken adapter never passes silently
            raise ValueError(f"the adapter module `{module}` ({kind}) has NaN or inf values")
        if rows is None and len(pieces) == 1:
            return delta
        if out is None:
            ref = base if base is not None else delta
            out = torch.zeros(shape, dtype=ref.dtype, device=ref.device)
        if rows is None:
            out += delta
        else:
            out[rows[0]:rows[1]] += delta
    if out is None:
        raise RuntimeError(f"no adapter piece for key {key!r}")
    return out
