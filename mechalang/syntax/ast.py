"""The abstract syntax tree of a `.mecha` program.

Every node is a frozen dataclass. Source spans (and comments) are carried for diagnostics and the
printer but excluded from equality, so that `parse(print(tree)) == tree` holds.

Numbers keep their source text (`text`) rather than a float, so that `nan` compares equal to itself
and the printer reproduces what the user wrote.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterable, Union

from ..diagnostics import Span


def _span() -> Span | None:
    return field(default=None, compare=False, repr=False, kw_only=True)


@dataclass(frozen=True)
class Node:
    span: Span | None = _span()


# ------------------------------------------------------------------------------------------------
# Types (annotations)


@dataclass(frozen=True)
class TypeExpr(Node):
    """`float`, `Model[sd1]`, `list[Model]`, `Hyper` ... `args` are nested types or arch names."""

    name: str
    args: tuple["TypeExpr", ...] = ()


# ------------------------------------------------------------------------------------------------
# Expressions


@dataclass(frozen=True)
class Number(Node):
    text: str  # canonical source text: "0.5", "1e-3", "inf", "nan", "3"

    @property
    def value(self) -> float | int:
        t = self.text.replace("_", "")
        if t == "inf":
            return math.inf
        if t == "nan":
            return math.nan
        if any(c in t for c in ".eE"):
            return float(t)
        return int(t)  # the parser rejects integers too long to convert


@dataclass(frozen=True)
class String(Node):
    value: str


@dataclass(frozen=True)
class Bool(Node):
    value: bool


@dataclass(frozen=True)
class Name(Node):
    id: str


@dataclass(frozen=True)
class Attribute(Node):
    value: "Expr"
    attr: str


@dataclass(frozen=True)
class Index(Node):
    value: "Expr"
    index: "Expr"


@dataclass(frozen=True)
class Splat(Node):
    """`*xs` inside a call's positional arguments or a list."""

    value: "Expr"


@dataclass(frozen=True)
class Keyword(Node):
    name: str
    value: "Expr"
    name_span: Span | None = _span()


@dataclass(frozen=True)
class Call(Node):
    func: "Expr"
    args: tuple["Expr | Splat", ...] = ()
    kwargs: tuple[Keyword, ...] = ()


@dataclass(frozen=True)
class ListExpr(Node):
    items: tuple["Expr | Splat", ...] = ()


@dataclass(frozen=True)
class ListComp(Node):
    """`[element for var in iterable]`"""

    element: "Expr"
    var: str
    iterable: "Expr"
    var_span: Span | None = _span()


@dataclass(frozen=True)
class UnaryOp(Node):
    op: str  # "-"
    operand: "Expr"


@dataclass(frozen=True)
class BinOp(Node):
    op: str  # "+", "-", "*", "/", "|"
    left: "Expr"
    right: "Expr"


@dataclass(frozen=True)
class Pipe(Node):
    """`value |> call` means `call` with `value` inserted as its first positional argument."""

    value: "Expr"
    call: Call


# Selectors: the left-hand side of a hyperparameter-map entry.


@dataclass(frozen=True)
class SelDefault(Node):
    pass


@dataclass(frozen=True)
class SelName(Node):
    """A component, block or class name of the architecture (`clip_l`, `IN04`, `attn2`)."""

    name: str


@dataclass(frozen=True)
class SelRange(Node):
    """`IN00..IN05`: blocks in the architecture's order, both ends included."""

    start: str
    end: str


@dataclass(frozen=True)
class SelGlob(Node):
    """`"OUT*"`: a glob over block names."""

    pattern: str


@dataclass(frozen=True)
class SelKey(Node):
    """`key("*.proj_in.*")`: a glob over tensor key names."""

    pattern: str


@dataclass(frozen=True)
class SelAnd(Node):
    left: "Selector"
    right: "Selector"


@dataclass(frozen=True)
class SelNot(Node):
    operand: "Selector"


Selector = Union[SelDefault, SelName, SelRange, SelGlob, SelKey, SelAnd, SelNot]


@dataclass(frozen=True)
class MapEntry(Node):
    selector: Selector
    value: "Expr"


@dataclass(frozen=True)
class HyperMap(Node):
    entries: tuple[MapEntry, ...] = ()


@dataclass(frozen=True)
class With(Node):
    """`base with {...}`: the rules of the map appended to `base` (later rules win)."""

    base: "Expr"
    overrides: HyperMap


Expr = Union[Number, String, Bool, Name, Attribute, Index, Call, ListExpr, ListComp, UnaryOp, BinOp,
             Pipe, HyperMap, With]


# ------------------------------------------------------------------------------------------------
# Statements


@dataclass(frozen=True)
class Import(Node):
    path: str
    alias: str
    alias_span: Span | None = _span()


@dataclass(frozen=True)
class ImportName(Node):
    name: str
    alias: str | None = None

    @property
    def bound(self) -> str:
        return self.alias or self.name


@dataclass(frozen=True)
class FromImport(Node):
    path: str
    names: tuple[ImportName, ...]


@dataclass(frozen=True)
class Param(Node):
    name: str
    type: TypeExpr | None = None
    default: Expr | None = None
    name_span: Span | None = _span()


@dataclass(frozen=True)
class Let(Node):
    name: str
    value: Expr
    type: TypeExpr | None = None
    name_span: Span | None = _span()


@dataclass(frozen=True)
class DefParam(Node):
    name: str
    default: Expr | None = None
    type: TypeExpr | None = None


@dataclass(frozen=True)
class Block(Node):
    """`{ let a = ...; let b = ...; result }` — the body of a `def` (at least one `let`)."""

    lets: tuple[Let, ...]
    result: Expr


@dataclass(frozen=True)
class Def(Node):
    name: str
    params: tuple[DefParam, ...]
    body: Expr | Block
    name_span: Span | None = _span()


@dataclass(frozen=True)
class Export(Node):
    value: Expr
    path: Expr
    dtype: str | None = None  # "fp16", "bf16", "fp32", "fp64", "fp8"; or a format: "lora"
    # `as lora(rank=32)`: the format's options, as a call of the name after `as`
    format: "Call | None" = None
    # `as {vae: fp32, default: fp16}`: output dtypes per key (values are dtype names)
    dtypes: "HyperMap | None" = None


Stmt = Union[Import, FromImport, Param, Let, Def, Export]


@dataclass(frozen=True)
class Comment:
    """A `# ...` comment: its text (with the `#`) and where it was. Not part of equality."""

    text: str
    line: int
    col: int
    own_line: bool  # nothing but white space before it on its line


@dataclass(frozen=True)
class Module(Node):
    statements: tuple[Stmt, ...] = ()
    comments: tuple[Comment, ...] = field(default=(), compare=False, repr=False)


def iter_nodes(node) -> Iterable[Node]:
    """Every AST node under `node` (itself included), iteratively, in source order."""
    stack = [node]
    while stack:
        n = stack.pop()
        if isinstance(n, tuple):
            stack.extend(reversed(n))
            continue
        if not isinstance(n, Node):
            continue
        yield n
        children = []
        for f in n.__dataclass_fields__:
            if f in ("span", "name_span", "alias_span", "var_span", "comments"):
                continue
            v = getattr(n, f)
            if isinstance(v, (Node, tuple)):
                children.append(v)
        stack.extend(reversed(children))
