"""Type annotations (`let x: Model[sd1] = ...`, `param alpha: float`): checked, never inferred from."""

from __future__ import annotations

from typing import Any

from ..diagnostics import Span, codes, did_you_mean
from ..syntax import ast
from .values import POISON, UNRESOLVED, ArchValue, HyperValue, ListValue, ModelValue, is_number, type_name

TYPE_NAMES = ("float", "int", "bool", "str", "Arch", "Model", "Delta", "Hyper", "list")
# How many arguments each type takes in brackets: `list[float]`, `Model[sd1]`; `float[int]` is no type.
TYPE_ARITY = {"float": 0, "int": 0, "bool": 0, "str": 0, "Arch": 0, "Model": 1, "Delta": 1, "Hyper": 1, "list": 1}


def show_type(t: ast.TypeExpr) -> str:
    if not t.args:
        return t.name
    return f"{t.name}[{', '.join(show_type(a) for a in t.args)}]"


def check_annotation(ev, t: ast.TypeExpr, value: Any, span: Span | None, what: str) -> Any:
    if value is POISON:
        return POISON
    problem = _mismatch(ev, t, value)
    if problem is None:
        return float(value) if t.name == "float" and isinstance(value, int) and not isinstance(value, bool) else value
    if problem:
        ev.err(codes.ANNOTATION_MISMATCH, f"{what} is declared {show_type(t)} but is {problem}", span,
               label=f"this is {problem}",
               secondary=[], help=_hint(t, value))
    return POISON


def _hint(t: ast.TypeExpr, value: Any) -> str | None:
    if t.name == "Model" and isinstance(value, ModelValue) and value.node.space == "delta":
        return "add it to a base model: `base + delta`"
    if t.name == "Delta" and isinstance(value, ModelValue) and value.node.space == "weight":
        return "subtract a base model: `model - base`"
    return None


def _mismatch(ev, t: ast.TypeExpr, v: Any) -> str | None:
    """None when `v` has type `t`; '' when the annotation itself was bad (reported); else v's type."""
    name = t.name
    if name not in TYPE_NAMES:
        sugg = did_you_mean(name, TYPE_NAMES)
        ev.err(codes.UNKNOWN_TYPE, f"unknown type `{name}`", t.span, help=f"did you mean `{sugg}`?" if sugg else
               f"types are: {', '.join(TYPE_NAMES)}")
        return ""
    allowed = TYPE_ARITY[name]
    if len(t.args) > allowed:
        what = "no type arguments" if allowed == 0 else "one type argument"
        example = {"list": "list[float]", "Model": "Model[sd1]", "Delta": "Delta[sd1]", "Hyper": "Hyper[sd1]"}
        ev.err(codes.UNKNOWN_TYPE, f"`{name}` takes {what}", t.span,
               help=f"write `{example[name]}`" if name in example else f"write `{name}`")
        return ""
    actual = type_name(v)
    if name == "float":
        return None if is_number(v) else actual
    if name == "int":
        return None if isinstance(v, int) and not isinstance(v, bool) else actual
    if name == "bool":
        return None if isinstance(v, bool) else actual
    if name == "str":
        return None if isinstance(v, str) else actual
    if name == "Arch":
        return None if isinstance(v, ArchValue) else actual
    if name == "list":
        if not isinstance(v, ListValue):
            return actual
        if t.args:
            for item in v.items:
                if _mismatch(ev, t.args[0], item) is not None:
                    return actual
        return None
    if name in ("Model", "Delta"):
        want = "weight" if name == "Model" else "delta"
        if not isinstance(v, ModelValue) or v.node.space != want:
            return actual
        return _arch_mismatch(ev, t, v.node.arch.name, actual)
    if name == "Hyper":
        if is_number(v) or isinstance(v, bool):
            return None
        if not isinstance(v, HyperValue):
            return actual
        if t.args:
            want = _arch_named(ev, t.args[0])
            if want is None:
                return ""
            if v.arch_names and want.name not in v.arch_names:
                return actual
        return None
    return actual  # pragma: no cover


def _arch_named(ev, t: ast.TypeExpr):
    """The architecture an annotation's argument names (aliases too), or None (reported)."""
    from .builtins import get_arch

    arch = get_arch(t.name)
    if arch is None:
        from ..archs.registry import all_selector_names

        sugg = did_you_mean(t.name, all_selector_names())
        ev.err(codes.UNKNOWN_ARCH, f"unknown architecture `{t.name}`", t.span,
               help=f"did you mean `{sugg}`?" if sugg else "see `mecha info`")
    return arch


def _arch_mismatch(ev, t: ast.TypeExpr, arch_name: str, actual: str) -> str | None:
    if not t.args:
        return None
    arch = _arch_named(ev, t.args[0])
    if arch is None:
        return ""
    return None if arch.name == arch_name or arch_name == UNRESOLVED.name else actual
