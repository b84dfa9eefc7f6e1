"""The values a recipe evaluates to while it is checked (no tensors: models are graph nodes).

Scalars are plain Python values (bool, int, float, str). Everything else is one of the classes
below. `Poison` stands for a value whose computation already produced an error: operations on it
quietly give `Poison` again, so one mistake is reported once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..archs.arch import Arch
from ..diagnostics import Span
from ..graph.nodes import HyperRule, Node
from ..syntax import ast


class Poison:
    _instance: "Poison | None" = None

    def __new__(cls):
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "<error>"


POISON = Poison()

# The architecture of a model whose file was not found yet (see Options.defer_missing_models): it
# unifies with every architecture and its selectors are checked when the file is there.
UNRESOLVED = Arch("?", description="a model whose file is not found yet")


@dataclass(frozen=True)
class ListValue:
    items: tuple[Any, ...]


@dataclass(frozen=True)
class ArchValue:
    arch: Any  # archs.arch.Arch


@dataclass(frozen=True)
class ModelValue:
    node: Node


@dataclass(frozen=True)
class HyperValue:
    """A hyperparameter map. `variants` maps an architecture name (or None: not yet tied to one)
    to its rules, in order; the last matching rule wins for a key."""

    variants: tuple[tuple[str | None, tuple[HyperRule, ...]], ...]
    span: Span | None = field(default=None, compare=False)

    def for_arch(self, arch_name: str) -> tuple[HyperRule, ...] | None:
        generic = None
        for name, rules in self.variants:
            if name == arch_name:
                return rules
            if name is None:
                generic = rules
        return generic

    @property
    def arch_names(self) -> list[str]:
        return [n for n, _ in self.variants if n is not None]

    def map_values(self, f: Callable[[Any], Any]) -> "HyperValue":
        return HyperValue(tuple((a, tuple(HyperRule(r.selector, f(r.value), r.span, r.group) for r in rules))
                                for a, rules in self.variants), self.span)


@dataclass(frozen=True)
class Closure:
    """A `def` with the module environment it was defined in."""

    definition: ast.Def
    env: "Env"
    module: Path | None


@dataclass(frozen=True)
class Builtin:
    name: str
    impl: Callable  # (evaluator, call ast, positional values, keyword values) -> value


@dataclass(frozen=True)
class MethodValue:
    spec: Any  # methods.registry.MethodSpec


@dataclass(frozen=True)
class Namespace:
    name: str
    env: "Env"
    path: Path


class Env:
    """A scope: names to values, with a parent. Module scopes are the root of their chain."""

    def __init__(self, parent: "Env | None" = None):
        self.parent = parent
        self.values: dict[str, Any] = {}

    def lookup(self, name: str) -> Any:
        env: Env | None = self
        while env is not None:
            if name in env.values:
                return env.values[name]
            env = env.parent
        raise KeyError(name)

    def names(self) -> list[str]:
        out: list[str] = []
        env: Env | None = self
        while env is not None:
            out.extend(env.values)
            env = env.parent
        return out

    def child(self) -> "Env":
        return Env(self)


def type_name(v: Any) -> str:
    if v is POISON:
        return "<error>"
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int):
        return "int"
    if isinstance(v, float):
        return "float"
    if isinstance(v, str):
        return "str"
    if isinstance(v, ModelValue):
        return v.node.type_name
    if isinstance(v, HyperValue):
        archs = v.arch_names
        return f"Hyper[{'|'.join(archs)}]" if archs else "Hyper"
    if isinstance(v, ListValue):
        inner = sorted({type_name(i) for i in v.items})
        return f"list[{inner[0]}]" if len(inner) == 1 else ("list" if not inner else f"list[{' | '.join(inner)}]")
    if isinstance(v, ArchValue):
        return "Arch"
    if isinstance(v, (Closure, Builtin, MethodValue)):
        return "function"
    if isinstance(v, Namespace):
        return "module"
    return type(v).__name__


def a_type(v: Any) -> str:
    """The type of `v` with its article, for messages: `an int`, `a Model[sd1]`."""
    name = type_name(v)
    return f"{'an' if name[:1].lower() in 'aeiou' else 'a'} {name}"


def is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def show_scalar(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return str(v)
