"""Key sets of graph nodes: which tensor keys a computation has, with dtype and shape.

These rules mirror what lowering does per key (graph/lower.py), so that `mecha check` knows each
output's exact header without reading a tensor:

- a method has the keys of its first model; a key another input lacks is kept from the first;
- `a - b` has the keys both have (a delta is only defined where both are);
- `model + delta` has the model's keys; `delta + delta` the union (a missing delta is zero);
- `a | b` the union, left first; `scale` its input's; `select` the component's.
"""

from __future__ import annotations

from ..graph.nodes import KeyMeta


def shape_conflicts(inputs: list[dict[str, KeyMeta]]) -> list[tuple[str, list[tuple[int, ...] | None]]]:
    """Keys present in more than one input with different shapes."""
    if len(inputs) < 2:
        return []
    first = inputs[0]
    out = []
    for key in first:
        shapes = [i[key].shape if key in i else None for i in inputs]
        present = {s for s in shapes if s is not None}
        if len(present) > 1:
            out.append((key, shapes))
    return out


def method_keys(inputs: list[dict[str, KeyMeta]], drop: set[str] = frozenset()) -> dict[str, KeyMeta]:
    if not inputs:
        return {}
    return {k: m for k, m in inputs[0].items() if k not in drop}


def sub_keys(a: dict[str, KeyMeta], b: dict[str, KeyMeta], drop: set[str] = frozenset()) -> dict[str, KeyMeta]:
    return {k: m for k, m in a.items() if k in b and k not in drop}


def add_keys(a: dict[str, KeyMeta], b: dict[str, KeyMeta], a_space: str, b_space: str,
             drop: set[str] = frozenset()) -> dict[str, KeyMeta]:
    if a_space == "weight":
        return {k: m for k, m in a.items() if k not in drop}
    if b_space == "weight":
        return {k: m for k, m in b.items() if k not in drop}
    out = {k: m for k, m in a.items() if k not in drop}
    for k, m in b.items():
        if k not in out and k not in drop:
            out[k] = m
    return out


def union_keys(a: dict[str, KeyMeta], b: dict[str, KeyMeta]) -> dict[str, KeyMeta]:
    out = dict(a)
    for k, m in b.items():
        out.setdefault(k, m)
    return out
