"""Which tensor keys a node of the recipe graph has, and where each key's value comes from.

One set of rules, read by the checker (each node's key set, built from the inputs' headers, so
`mecha check` knows every output header without reading a tensor) and by lowering (each key's
expression in the plan):

- a merge method has the keys of its first model; a key another input lacks is taken unchanged
  from the first ("kept", reported);
- `a - b` has the keys both have (a delta is defined only where both are);
- `model + delta` has the model's keys (a key the delta lacks is kept from the model);
  `delta + delta` has the union (a missing delta is zero);
- `a | b` has the union, each key from the left when it has it;
- `scale` has its input's keys; `select` a component's (filtered by the checker), or, with
  --force, its input's keys but those whose shapes differ from the merge's first input (which then
  keeps them, as it keeps keys an input lacks).

Keys of a non-primary input that the result does not have are "left out" and reported. Non-float
tensors are never computed: lowering copies them from the first input that has them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from .nodes import KeyMeta

BUILTIN_NODE_OPS = ("load", "add", "sub", "scale", "fallback", "select")


@dataclass(frozen=True)
class KeySource:
    """How a node gets one key: computed from its inputs, or one input's value taken as is."""

    compute: bool
    arg: int = 0  # when taken: the input whose value is the result
    kept: bool = False  # taken because other inputs lack the key (reported as "kept")


COMPUTE = KeySource(True)


def is_union(op: str, spaces: Sequence[str]) -> bool:
    return op == "fallback" or (op == "add" and "weight" not in spaces)


def primary(op: str, spaces: Sequence[str]) -> int:
    """The input whose keys (order, dtype and shape) the result has: the model of `model + delta`,
    else the first."""
    if op == "add" and "weight" in spaces:
        return list(spaces).index("weight")
    return 0


def key_source(op: str, spaces: Sequence[str], present: Sequence[bool]) -> KeySource | None:
    """Where the value of one key comes from, given which inputs have it; None when the node does
    not have the key."""
    if not any(present):
        return None
    if op in ("select", "fallback"):
        return KeySource(False, present.index(True))
    if op == "scale":
        return COMPUTE
    if op == "sub":
        return COMPUTE if all(present) else None
    if is_union(op, spaces):  # delta + delta
        return COMPUTE if all(present) else KeySource(False, present.index(True))
    first = primary(op, spaces)
    if not present[first]:
        return None
    if all(present):
        return COMPUTE
    return KeySource(False, first, kept=True)


def node_keys(op: str, spaces: Sequence[str], inputs: Sequence[dict[str, KeyMeta]]) -> dict[str, KeyMeta]:
    """The keys of a node (other than `load` and `select`) from its inputs' keys, in output order."""
    if not inputs:
        return {}
    first = primary(op, spaces)
    base = inputs[first]
    if op == "sub":  # the keys every input has
        others = [ks for i, ks in enumerate(inputs) if i != first and ks is not base]
        return {k: m for k, m in base.items() if all(k in ks for ks in others)}
    if not is_union(op, spaces):  # a method, or model + delta: the primary input's keys, all of them
        return base  # shared, never changed: key sets are built once and only read
    out: dict[str, KeyMeta] = {}
    for i in [first] + [i for i in range(len(inputs)) if i != first]:
        for k, meta in inputs[i].items():
            if k not in out:
                out[k] = meta
    return out


def left_out(op: str, spaces: Sequence[str], inputs: Sequence[dict[str, KeyMeta]],
             result: dict[str, KeyMeta]) -> list[tuple[int, str]]:
    """(input index, key) for each key of a non-primary input that the result does not have."""
    if op in ("load", "select", "scale") or is_union(op, spaces):
        return []
    first = primary(op, spaces)
    return [(i, k) for i, ks in enumerate(inputs) if i != first for k in ks if k not in result]


def shape_conflicts(inputs: Sequence[dict[str, KeyMeta]]) -> list[tuple[str, list[tuple[int, ...] | None]]]:
    """Keys present in more than one input with different shapes (each input's shape, or None)."""
    if len(inputs) < 2:
        return []
    out = []
    for key in inputs[0]:
        shapes = [i[key].shape if key in i else None for i in inputs]
        if len({s for s in shapes if s is not None}) > 1:
            out.append((key, shapes))
    return out
