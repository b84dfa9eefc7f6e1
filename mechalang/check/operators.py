"""The typed operator algebra of DESIGN.md §1.

    Model - Model -> Delta          Model + Delta -> Model         Delta + Delta -> Delta
    Hyper * Delta -> Delta          Delta / number -> Delta        -Delta -> Delta
    Model | Model -> Model          Delta | Delta -> Delta         Hyper | Hyper -> Hyper
    numbers: + - * /                strings and lists: +            number op map: per rule value

Everything else is an error with a hint at what the user likely meant.
"""

from __future__ import annotations

import operator
from typing import Any

from ..diagnostics import Label, Span, codes, error
from ..graph.keys import node_keys, primary, shape_conflicts
from ..graph.nodes import BoundHyper, HyperRule, ShapeMask
from ..methods.registry import Float
from ..syntax import ast
from .values import POISON, HyperValue, ListValue, ModelValue, a_type, is_number, type_name

_NUM_OPS = {"+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv}
_OP_WORDS = {"+": "add", "-": "subtract", "*": "multiply", "/": "divide", "|": "combine with `|`"}


def negate(ev, v: Any, e: ast.UnaryOp) -> Any:
    if v is POISON:
        return POISON
    if is_number(v):
        return -v
    if isinstance(v, HyperValue):
        return _map_arith(ev, v, lambda x: -x, e.span)
    if isinstance(v, ModelValue) and v.node.space == "delta":
        return scale(ev, v, BoundHyper(scalar=-1.0), e.span)
    if isinstance(v, ModelValue):
        return ev.err(codes.CANNOT_NEGATE, f"cannot negate a {v.node.type_name}", e.span,
                      help="negate a difference instead: `-(a - b)`")
    return ev.err(codes.CANNOT_NEGATE, f"cannot negate {a_type(v)}", e.span)


def binary(ev, e: ast.BinOp, left: Any, right: Any) -> Any:
    if left is POISON or right is POISON:
        return POISON
    op = e.op
    lm, rm = isinstance(left, ModelValue), isinstance(right, ModelValue)
    if not lm and not rm:
        return _plain(ev, e, left, right)
    if op == "|":
        if lm and rm:
            return fallback(ev, e, left, right)
        return _mismatch(ev, e, left, right)
    if lm and rm:
        ls, rs = left.node.space, right.node.space
        if op == "-" and ls == rs:
            return combine(ev, e, "sub", left, right, "delta")
        if op == "-" and ls == "weight" and rs == "delta":
            neg = scale(ev, right, BoundHyper(scalar=-1.0), e.span)
            return combine(ev, e, "add", left, neg, "weight") if neg is not POISON else POISON
        if op == "+" and not (ls == "weight" and rs == "weight"):
            return combine(ev, e, "add", left, right, "weight" if "weight" in (ls, rs) else "delta")
        if op == "+":
            return ev.err(codes.MODEL_PLUS_MODEL, f"cannot add two models ({left.node.type_name} + {right.node.type_name})",
                          e.span, help="did you mean `weighted_sum(a, b)`? To add what a model learned, "
                                       "add a difference: `a + (b - base)`")
        return ev.err(codes.BAD_OPERANDS, f"cannot {_OP_WORDS[op]} {left.node.type_name} and {right.node.type_name}",
                      e.span, help="models combine with `+`/`-` (task arithmetic) or with merge methods")
    # exactly one side is a model
    model, other, other_span = (left, right, e.right.span) if lm else (right, left, e.left.span)
    if op == "*" and model.node.space == "delta":
        bound = _scale_hyper(ev, other, other_span, model)
        return POISON if bound is None else scale(ev, model, bound, e.span)
    if op == "/" and lm and model.node.space == "delta":
        if is_number(other):
            if other == 0:
                return ev.err(codes.DIVISION_BY_ZERO, "division by zero", e.right.span)
            if not ev.check_number(other, e.right.span, "the divisor"):
                return POISON
            return scale(ev, model, BoundHyper(scalar=1.0 / other, span=other_span), e.span)
        return ev.err(codes.BAD_OPERANDS, f"a Delta can be divided by a number, not by {a_type(other)}", e.right.span)
    if op in "*/" and model.node.space == "weight":
        return ev.err(codes.SCALED_MODEL, f"cannot {_OP_WORDS[op]} a {model.node.type_name} by {a_type(other)}",
                      e.span, help="scale a difference instead: `base + 0.5 * (tuned - base)`, "
                                   "or use `weighted_sum(a, b, alpha=0.5)`")
    return _mismatch(ev, e, left, right)


def _mismatch(ev, e: ast.BinOp, left: Any, right: Any) -> Any:
    return ev.err(codes.BAD_OPERANDS, f"cannot {_OP_WORDS[e.op]} {type_name(left)} and {type_name(right)}", e.span)


def _plain(ev, e: ast.BinOp, left: Any, right: Any) -> Any:
    op = e.op
    if is_number(left) and is_number(right) and op in _NUM_OPS:
        if op == "/" and right == 0:
            return ev.err(codes.DIVISION_BY_ZERO, "division by zero", e.right.span)
        try:
            return _NUM_OPS[op](left, right)
        except OverflowError:
            return ev.err(codes.NUMBER_TOO_LARGE, "number too large", e.span)
    from .evaluate import MAX_ITEMS, MAX_STRING

    if op == "+" and isinstance(left, str) and isinstance(right, str):
        if len(left) + len(right) > MAX_STRING:
            return ev.too_large(f"a string of more than {MAX_STRING:,} characters", e.span)
        return left + right
    if op == "+" and isinstance(left, ListValue) and isinstance(right, ListValue):
        if len(left.items) + len(right.items) > MAX_ITEMS:
            return ev.too_large(f"a list of more than {MAX_ITEMS:,} items", e.span)
        return ListValue(left.items + right.items)
    if op == "|" and isinstance(left, HyperValue) and isinstance(right, HyperValue):
        joined = hyper_fallback(left, right, e.span)
        if sum(len(rules) for _, rules in joined.variants) > MAX_ITEMS:
            return ev.too_large(f"a hyperparameter map of more than {MAX_ITEMS:,} rules", e.span)
        return joined
    if op in _NUM_OPS and isinstance(left, HyperValue) and is_number(right):
        f = _NUM_OPS[op]
        if op == "/" and right == 0:
            return ev.err(codes.DIVISION_BY_ZERO, "division by zero", e.right.span)
        return _map_arith(ev, left, lambda x: f(x, right), e.span)
    if op in _NUM_OPS and is_number(left) and isinstance(right, HyperValue):
        f = _NUM_OPS[op]
        if op == "/" and any(r.value == 0 for _, rs in right.variants for r in rs):
            return ev.err(codes.DIVISION_BY_ZERO, "division by zero: the map has a 0 value", e.right.span)
        return _map_arith(ev, right, lambda x: f(left, x), e.span)
    return _mismatch(ev, e, left, right)


def _map_arith(ev, m: HyperValue, f, span: Span | None) -> Any:
    # A key no rule matches gets the method's default, which arithmetic on the map cannot reach:
    # so arithmetic needs a `default` rule to mean the same thing on every key.
    for arch, rules in m.variants:
        if not any(isinstance(r.selector, ast.SelDefault) for r in rules):
            return ev.err(codes.MAP_ARITHMETIC, "arithmetic on a hyperparameter map needs a `default` rule", span,
                          help="add `default: VALUE` to the map, so every key has a value to compute with")
        for r in rules:
            if not is_number(r.value):
                return ev.err(codes.MAP_ARITHMETIC, f"arithmetic on a map with a non-number value ({r.value!r})", r.span)
    return m.map_values(f)


def hyper_fallback(left: HyperValue, right: HyperValue, span: Span | None) -> HyperValue:
    """`a | b` on maps: a where a has a rule, else b. Per architecture: a map written for any
    architecture applies to each of the other side's (that is how `{M00: 0.1} | GRAD_V` overrides a
    preset that serves SD1 and SDXL with one name); maps of different architectures sit side by
    side."""
    archs: list[str | None] = []
    for a, _ in (*left.variants, *right.variants):
        if a not in archs:
            archs.append(a)
    out = []
    for arch in archs:
        rules = _fallback_rules(left.for_arch(arch) if arch is not None else _generic(left),
                                right.for_arch(arch) if arch is not None else _generic(right))
        out.append((arch, rules))
    return HyperValue(tuple(out), span)


def _generic(m: HyperValue) -> tuple[HyperRule, ...] | None:
    return next((rules for a, rules in m.variants if a is None), None)


def _fallback_rules(left: tuple[HyperRule, ...] | None, right: tuple[HyperRule, ...] | None) -> tuple[HyperRule, ...]:
    if left is None or right is None:
        return left if right is None else right  # type: ignore[return-value]
    below = tuple(r for r in right if not isinstance(r.selector, ast.SelDefault))
    has_default = any(isinstance(r.selector, ast.SelDefault) for r in left)
    defaults = () if has_default else tuple(r for r in right if isinstance(r.selector, ast.SelDefault))
    return defaults + below + left


def _scale_hyper(ev, v: Any, span: Span | None, model: ModelValue) -> BoundHyper | None:
    from .calls import bind_hyper

    return bind_hyper(ev, Float(), v, span, model.node.arch, model.node.keys, "the scale factor")


def scale(ev, model: ModelValue, factor: BoundHyper, span: Span | None) -> Any:
    n = model.node
    node = ev.builder.node("scale", (n,), space=n.space, arch=n.arch, keys=n.keys,
                           hypers=(("factor", factor),), origin=span)
    return ModelValue(node)


def combine(ev, e: ast.BinOp, op: str, left: ModelValue, right: ModelValue, space: str) -> Any:
    arch = ev.unify_arch([(left, e.left.span), (right, e.right.span)], f"`{e.op}`", e.span)
    if arch is None:
        return POISON
    first = primary(op, [left.node.space, right.node.space])
    checked = shape_check(ev, [(left, e.left.span), (right, e.right.span)], e.span, first)
    if checked is None:
        return POISON
    a, b = (v.node for v in checked)
    keys = node_keys(op, [a.space, b.space], [a.keys, b.keys])
    return ModelValue(ev.builder.node(op, (a, b), space=space, arch=arch, keys=keys, origin=e.span))


def fallback(ev, e: ast.BinOp, left: ModelValue, right: ModelValue) -> Any:
    if left.node.space != right.node.space:
        return ev.err(codes.FALLBACK_MIXES_SPACES, f"`|` needs two values of one kind, found {left.node.type_name} and "
                               f"{right.node.type_name}", e.span)
    arch = ev.unify_arch([(left, e.left.span), (right, e.right.span)], "`|`", e.span)
    if arch is None:
        return POISON
    keys = node_keys("fallback", [left.node.space, right.node.space], [left.node.keys, right.node.keys])
    return ModelValue(ev.builder.node("fallback", (left.node, right.node), space=left.node.space,
                                      arch=arch, keys=keys, origin=e.span))


def _conflicts(ev, key_sets: list[dict]) -> list:
    """`shape_conflicts`, remembered per combination of key sets: a chain of 10,000 merges of one
    model with another compares the same two key sets each time."""
    if all(ks is key_sets[0] for ks in key_sets):
        return []
    cache = ev.__dict__.setdefault("_shape_conflicts", {})
    ident = tuple(id(ks) for ks in key_sets)
    hit = cache.get(ident)
    if hit is None:
        hit = cache[ident] = (key_sets, shape_conflicts(key_sets))  # the sets are kept: ids stay unique
    return hit[1]


def shape_check(ev, values: list[tuple[ModelValue, Span | None]], span: Span | None,
                first: int = 0) -> list[ModelValue] | None:
    """The inputs of a merge, checked for keys whose shapes differ: an error (None); with --force,
    the inputs with every input but the `first` masked (a `select` by `ShapeMask`) so that those
    keys are taken from the first input, kept and counted in the summary like keys an input lacks."""
    conflicts = _conflicts(ev, [v.node.keys for v, _ in values])
    if not conflicts:
        return [v for v, _ in values]
    if ev.options.force:
        clash = frozenset(k for k, _ in conflicts)
        return [v if i == first else _mask(ev, v, clash, span) for i, (v, _) in enumerate(values)]
    shown = []
    for key, shapes in conflicts[:3]:
        shown.append(f"`{key}`: " + " vs ".join(str(list(s)) if s is not None else "missing" for s in shapes))
    more = f" (and {len(conflicts) - 3} more)" if len(conflicts) > 3 else ""
    ev.report(error(codes.SHAPE_MISMATCH, f"{len(conflicts)} key{'s' if len(conflicts) != 1 else ''} have different "
                             f"shapes in these models{more}", span,
                    label="shapes differ", notes=shown,
                    secondary=[Label(s, f"input {i + 1}") for i, (_, s) in enumerate(values) if s is not None],
                    help="these models are not of one layout (an inpainting model among regular ones?)"))
    return None


def _mask(ev, v: ModelValue, clash: frozenset[str], span: Span | None) -> ModelValue:
    """`v` without the keys in `clash` (those it has)."""
    hidden = frozenset(k for k in clash if k in v.node.keys)
    if not hidden:
        return v
    keys = {k: m for k, m in v.node.keys.items() if k not in hidden}
    return ModelValue(ev.builder.node("select", (v.node,), space=v.node.space, arch=v.node.arch, keys=keys,
                                      component=ShapeMask(hidden), origin=span))


__all__ = ["binary", "negate", "scale", "combine", "fallback", "shape_check", "hyper_fallback"]
