"""The canonical text of a `.mecha` program (what `mecha fmt` writes).

The form: 4-space indentation, lines of at most 100 columns where possible, one statement per
line, blank lines between statements kept from the source (runs collapsed to one), the fewest
parentheses precedence allows, `a + b`, keyword arguments `k=v`, map entries `sel: value`. A map,
list, call or parameter list that fits on its line and holds no comment is printed on one line;
otherwise one entry per line, each followed by `,`.

Comments are never lost. A comment on its own line before a statement, map entry, list item,
argument or parameter stays before it; a comment at the end of a line stays at the end of that
line; a comment inside an entry that cannot stay where it was goes on its own line before that
entry; anything else in a statement goes on its own lines right after the statement.

The layout is a small Wadler/Prettier-style document printer: the tree becomes a document of
text, groups, indentation and line breaks; a group is printed flat when it fits the remaining
width, else broken. Both steps are iterative where depth could matter.
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass, field
from typing import Callable, Sequence

from . import ast

WIDTH = 100
INDENT = 4

# ------------------------------------------------------------------------------------------------
# Documents


class _Doc:
    __slots__ = ("hard",)


class _Concat(_Doc):
    __slots__ = ("parts",)

    def __init__(self, parts: Sequence):
        self.parts = [p for p in parts if p is not None and p != ""]
        self.hard = any(isinstance(p, _Doc) and p.hard for p in self.parts)


class _Group(_Doc):
    __slots__ = ("contents",)

    def __init__(self, contents):
        self.contents = contents
        self.hard = isinstance(contents, _Doc) and contents.hard


class _Indent(_Doc):
    __slots__ = ("contents",)

    def __init__(self, contents):
        self.contents = contents
        self.hard = isinstance(contents, _Doc) and contents.hard


class _Line(_Doc):
    """A line break in a broken group; in a flat group, `flat` (a space or nothing)."""

    __slots__ = ("flat",)

    def __init__(self, flat: str, hard: bool = False):
        self.flat = flat
        self.hard = hard


class _IfBreak(_Doc):
    __slots__ = ("broken", "flat")

    def __init__(self, broken, flat=""):
        self.broken = broken
        self.flat = flat
        self.hard = False


class _Suffix(_Doc):
    """An end-of-line comment: printed before the next line break. Forces its groups to break."""

    __slots__ = ("text",)

    def __init__(self, text: str):
        self.text = text
        self.hard = True


class _Blank(_Doc):
    """An empty line, in a broken group only."""

    __slots__ = ()

    def __init__(self):
        self.hard = False


class _Text(_Doc):
    """Text that forces its groups to break (an own-line comment)."""

    __slots__ = ("text",)

    def __init__(self, text: str):
        self.text = text
        self.hard = True


LINE = _Line(" ")
SOFT = _Line("")
HARD = _Line("", hard=True)
BLANK = _Blank()


def _cat(*parts) -> _Concat:
    return _Concat(parts)


_BREAK, _FLAT = 0, 1


def _layout(doc, width: int = WIDTH) -> str:
    out: list[str] = []
    col = 0
    suffixes: list[str] = []
    stack: list[tuple[int, int, object]] = [(0, _BREAK, doc)]

    def newline(indent: int) -> None:
        nonlocal col
        flush_suffixes(indent)
        while out and out[-1].endswith(" "):
            out[-1] = out[-1].rstrip(" ")
            if not out[-1]:
                out.pop()
        out.append("\n" + " " * indent)
        col = indent

    def flush_suffixes(indent: int) -> None:
        if not suffixes:
            return
        first, *rest = suffixes
        out.append("  " + first)
        for s in rest:  # several end-of-line comments ended up on one line: keep them all
            out.append("\n" + " " * indent + s)
        suffixes.clear()

    while stack:
        indent, mode, d = stack.pop()
        if isinstance(d, str):
            out.append(d)
            col += len(d)
        elif isinstance(d, _Concat):
            for p in reversed(d.parts):
                stack.append((indent, mode, p))
        elif isinstance(d, _Group):
            if mode == _FLAT:
                stack.append((indent, _FLAT, d.contents))
            elif d.hard:
                stack.append((indent, _BREAK, d.contents))
            else:
                flat = _fits(d.contents, width - col, stack)
                stack.append((indent, _FLAT if flat else _BREAK, d.contents))
        elif isinstance(d, _Indent):
            stack.append((indent + INDENT, mode, d.contents))
        elif isinstance(d, _Line):
            if mode == _FLAT and not d.hard:
                out.append(d.flat)
                col += len(d.flat)
            else:
                newline(indent)
        elif isinstance(d, _IfBreak):
            stack.append((indent, mode, d.broken if mode == _BREAK else d.flat))
        elif isinstance(d, _Suffix):
            suffixes.append(d.text)
        elif isinstance(d, _Blank):
            if mode == _BREAK:
                flush_suffixes(indent)
                while out and out[-1].endswith(" "):
                    out[-1] = out[-1].rstrip(" ")
                    if not out[-1]:
                        out.pop()
                out.append("\n")
        elif isinstance(d, _Text):
            out.append(d.text)
            col += len(d.text)
        else:  # pragma: no cover
            raise TypeError(f"not a document: {d!r}")
    flush_suffixes(0)
    return "".join(out)


def _fits(doc, width: int, rest: list) -> bool:
    """Whether `doc` printed flat, and what follows it up to the next line break, fits `width`."""
    todo: list[tuple[int, object]] = [(_FLAT, doc)]
    rest_i = len(rest) - 1
    while width >= 0:
        if not todo:
            if rest_i < 0:
                return True
            _, mode, d = rest[rest_i]
            rest_i -= 1
            todo.append((mode, d))
            continue
        mode, d = todo.pop()
        if isinstance(d, str):
            width -= len(d)
        elif isinstance(d, _Concat):
            for p in reversed(d.parts):
                todo.append((mode, p))
        elif isinstance(d, _Group):
            todo.append((_BREAK if d.hard else mode, d.contents))
        elif isinstance(d, _Indent):
            todo.append((mode, d.contents))
        elif isinstance(d, _Line):
            if mode == _BREAK or d.hard:
                return True
            width -= len(d.flat)
        elif isinstance(d, _IfBreak):
            todo.append((mode, d.broken if mode == _BREAK else d.flat))
        elif isinstance(d, _Blank):
            if mode == _BREAK:
                return True
        elif isinstance(d, _Text):
            width -= len(d.text)
    return False


# ------------------------------------------------------------------------------------------------
# Strings


def quote(s: str) -> str:
    """A string literal for `s`, escaped canonically."""
    out = ['"']
    for ch in s:
        if ch == "\\":
            out.append("\\\\")
        elif ch == '"':
            out.append('\\"')
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\r":
            out.append("\\r")
        elif ch == "\0":
            out.append("\\0")
        elif ch == " " or ch.isprintable():
            out.append(ch)
        else:
            out.append(f"\\u{{{ord(ch):X}}}")
    out.append('"')
    return "".join(out)


# ------------------------------------------------------------------------------------------------
# Precedence

_PREC_PIPE, _PREC_OR, _PREC_SUM, _PREC_PRODUCT, _PREC_UNARY, _PREC_WITH, _PREC_POSTFIX, _PREC_ATOM = range(1, 9)
_BINOP_PREC = {"|": _PREC_OR, "+": _PREC_SUM, "-": _PREC_SUM, "*": _PREC_PRODUCT, "/": _PREC_PRODUCT}


def _prec(e) -> int:
    if isinstance(e, ast.Pipe):
        return _PREC_PIPE
    if isinstance(e, ast.BinOp):
        return _BINOP_PREC.get(e.op, _PREC_OR)
    if isinstance(e, ast.UnaryOp):
        return _PREC_UNARY
    if isinstance(e, ast.With):
        return _PREC_WITH
    if isinstance(e, (ast.Call, ast.Attribute, ast.Index)):
        return _PREC_POSTFIX
    return _PREC_ATOM


def _sel_prec(s) -> int:
    if isinstance(s, ast.SelAnd):
        return 1
    if isinstance(s, ast.SelNot):
        return 2
    return 3


# ------------------------------------------------------------------------------------------------
# Comments and rows


Pos = tuple[int, int]
_FAR: Pos = (1 << 60, 0)


def _start(span) -> Pos:
    return (span.line, span.col)


def _end(span) -> Pos:
    return (span.end_line, span.end_col)


@dataclass
class _Row:
    doc: object
    start_line: int | None
    end_line: int | None
    is_item: bool
    suffix: ast.Comment | None = None


@dataclass
class _Rows:
    rows: list[_Row] = field(default_factory=list)
    opener_suffix: ast.Comment | None = None


class _Printer:
    def __init__(self, comments: Sequence[ast.Comment]):
        self.comments = sorted(comments, key=lambda c: (c.line, c.col))
        self.keys = [(c.line, c.col) for c in self.comments]
        self.used = [False] * len(self.comments)

    # -- comment bookkeeping -----------------------------------------------------------------

    def take(self, lo: Pos, hi: Pos, want: Callable[[ast.Comment], bool] | None = None) -> list[ast.Comment]:
        """The comments in [lo, hi) not placed yet (and wanted), now placed."""
        out = []
        i = bisect_left(self.keys, lo)
        while i < len(self.keys) and self.keys[i] < hi:
            if not self.used[i] and (want is None or want(self.comments[i])):
                self.used[i] = True
                out.append(self.comments[i])
            i += 1
        return out

    def rest(self) -> list[ast.Comment]:
        return self.take((0, 0), _FAR)

    # -- rows: statements, entries, items ----------------------------------------------------

    def rows(self, items: Sequence, build: Callable, lo: Pos | None, hi: Pos | None,
             opener_line: int | None, *, inner_after: bool, tail_hi: Pos | None = None) -> _Rows:
        """Rows for `items` with the comments of [lo, hi) placed between them.

        `inner_after`: comments inside an item that it did not place go after it (statements)
        or before it (entries). `tail_hi`: an end-of-line comment on the last item's line before
        this position still belongs to the last item (the end of a parameter list is unknown).
        """
        res = _Rows()
        prev_end: Pos | None = lo
        prev_line = opener_line
        prev_item: _Row | None = None

        def place(cs: list[ast.Comment]) -> None:
            for c in cs:
                if not c.own_line and prev_line is not None and c.line == prev_line:
                    if prev_item is None and res.opener_suffix is None:
                        res.opener_suffix = c
                        continue
                    if prev_item is not None and prev_item.suffix is None:
                        prev_item.suffix = c
                        continue
                res.rows.append(_Row(_Text(c.text), c.line, c.line, False))

        for it in items:
            sp = getattr(it, "span", None)
            if sp is None or prev_end is None:
                doc = build(it)
                row = _Row(doc, None, None, True)
                res.rows.append(row)
                prev_item, prev_end, prev_line = row, None, None
                continue
            place(self.take(prev_end, _start(sp)))
            doc = build(it)
            inner = self.take(_start(sp), _end(sp))
            if not inner_after:
                for c in inner:
                    res.rows.append(_Row(_Text(c.text), sp.line, sp.line, False))
            row = _Row(doc, sp.line, sp.end_line, True)
            res.rows.append(row)
            prev_item, prev_end, prev_line = row, _end(sp), sp.end_line
            if inner_after:
                for c in inner:
                    res.rows.append(_Row(_Text(c.text), sp.end_line, sp.end_line, False))
        if prev_end is not None and hi is not None:
            place(self.take(prev_end, hi))
            if tail_hi is not None and prev_item is not None and prev_item.suffix is None:
                line = prev_line
                eol = self.take(prev_end, tail_hi, lambda c: c.line == line and not c.own_line)
                if eol:
                    prev_item.suffix = eol[0]
        return res

    @staticmethod
    def _blank(prev: _Row | None, row: _Row) -> bool:
        if prev is None or prev.end_line is None or row.start_line is None:
            return False
        return row.start_line - prev.end_line >= 2

    def statement_rows_doc(self, r: _Rows) -> _Concat:
        parts: list = []
        prev = None
        for row in r.rows:
            if prev is not None:
                if self._blank(prev, row):
                    parts.append(BLANK)
                parts.append(HARD)
            parts.append(row.doc)
            if row.suffix is not None:
                parts.append(_Suffix(row.suffix.text))
            prev = row
        return _Concat(parts)

    def container(self, open_: str, close: str, r: _Rows) -> object:
        """`open_ item, item close`, flat when it fits and holds no comment."""
        head = [open_]
        if r.opener_suffix is not None:
            head.append(_Suffix(r.opener_suffix.text))
        if not r.rows:
            if r.opener_suffix is not None:
                return _Group(_cat(*head, SOFT, close))
            return open_ + close
        last_item = max((i for i, row in enumerate(r.rows) if row.is_item), default=-1)
        parts: list = []
        prev = None
        for i, row in enumerate(r.rows):
            if prev is None:
                parts.append(SOFT)
            else:
                if self._blank(prev, row):
                    parts.append(BLANK)
                parts.append(LINE)
            parts.append(row.doc)
            if row.is_item:
                parts.append("," if i < last_item else _IfBreak(","))
            if row.suffix is not None:
                parts.append(_Suffix(row.suffix.text))
            prev = row
        return _Group(_cat(*head, _Indent(_Concat(parts)), SOFT, close))

    # -- module and statements ---------------------------------------------------------------

    def module(self, m: ast.Module) -> str:
        r = self.rows(m.statements, self.stmt, (0, 0), _FAR, None, inner_after=True)
        for c in self.rest():  # comments nothing claimed (nodes without spans)
            r.rows.append(_Row(_Text(c.text), c.line, c.line, False))
        text = _layout(self.statement_rows_doc(r))
        text = "\n".join(line.rstrip(" ") for line in text.split("\n")).strip("\n")
        return text + "\n" if text else ""

    def stmt(self, s) -> object:
        if isinstance(s, ast.Let):
            return _cat("let ", s.name, self.annotation(s.type), " = ", self.expr(s.value))
        if isinstance(s, ast.Param):
            default = _cat(" = ", self.expr(s.default)) if s.default is not None else None
            return _cat("param ", s.name, self.annotation(s.type), default)
        if isinstance(s, ast.Import):
            return f"import {quote(s.path)} as {s.alias}"
        if isinstance(s, ast.FromImport):
            names = ", ".join(n.name if n.alias is None else f"{n.name} as {n.alias}" for n in s.names)
            return f"from {quote(s.path)} import {names}"
        if isinstance(s, ast.Def):
            return self.def_(s)
        if isinstance(s, ast.Export):
            dtype = f" as {s.dtype}" if s.dtype is not None else None
            if s.format is not None:
                return _cat("export ", self.expr(s.value), " to ", self.expr(s.path), " as ", self.expr(s.format))
            if s.dtypes is not None:
                return _cat("export ", self.expr(s.value), " to ", self.expr(s.path), " as ", self.expr(s.dtypes))
            return _cat("export ", self.expr(s.value), " to ", self.expr(s.path), dtype)
        # A bare expression (a REPL input, a block's result).
        return self.expr(s)

    def annotation(self, t) -> str | None:
        return f": {type_text(t)}" if t is not None else None

    def def_(self, d: ast.Def):
        sp, ns = d.span, d.name_span
        lo = _end(ns) if ns is not None else (_start(sp) if sp is not None else None)
        opener = ns.end_line if ns is not None else (sp.line if sp is not None else None)
        hi = _end(d.params[-1].span) if d.params and d.params[-1].span is not None else lo
        body_start = _start(d.body.span) if getattr(d.body, "span", None) is not None else None
        if not d.params:
            lo = hi = None  # nothing to place comments between
        r = self.rows(d.params, self.def_param, lo, hi, opener, inner_after=False, tail_hi=body_start)
        params = self.container("(", ")", r)
        if isinstance(d.body, ast.Block):
            return _cat("def ", d.name, params, " ", self.block(d.body))
        return _cat("def ", d.name, params, " = ", self.expr(d.body))

    def def_param(self, p: ast.DefParam):
        if p.type is not None:
            default = _cat(" = ", self.expr(p.default)) if p.default is not None else None
            return _cat(p.name, ": ", type_text(p.type), default)
        if p.default is not None:
            return _cat(p.name, "=", self.expr(p.default))
        return p.name

    def block(self, b: ast.Block):
        sp = b.span
        items = list(b.lets) + [b.result]
        if sp is not None:
            lo, hi, opener = (sp.line, sp.col + 1), (sp.end_line, sp.end_col - 1), sp.line
        else:
            lo = hi = opener = None
        r = self.rows(items, self.stmt, lo, hi, opener, inner_after=True)
        # A result starting with `(`, `[`, `-` or `.` would continue the last `let`'s value.
        result_row = next(row for row in reversed(r.rows) if row.is_item)
        if _first_char(result_row.doc) in "([-.":
            lets = [row for row in r.rows if row.is_item]
            last_let = lets[-2]
            last_let.doc = _cat(last_let.doc, ";")
        head = ["{"]
        if r.opener_suffix is not None:
            head.append(_Suffix(r.opener_suffix.text))
        return _cat(*head, _Indent(_cat(HARD, self.statement_rows_doc(r))), HARD, "}")

    # -- expressions -------------------------------------------------------------------------

    def expr(self, e, min_prec: int = 0):
        # One frame per level where possible: the parser allows deep trees (see MAX_NESTING).
        if isinstance(e, ast.Number):
            d = e.text
        elif isinstance(e, ast.String):
            d = quote(e.value)
        elif isinstance(e, ast.Bool):
            d = "true" if e.value else "false"
        elif isinstance(e, ast.Name):
            d = e.id
        elif isinstance(e, ast.Attribute):
            d = _cat(self.expr(e.value, _PREC_POSTFIX), ".", e.attr)
        elif isinstance(e, ast.Index):
            d = _cat(self.expr(e.value, _PREC_POSTFIX), "[", self.expr(e.index), "]")
        elif isinstance(e, ast.Call):
            d = self.call(e)
        elif isinstance(e, ast.ListExpr):
            sp = e.span
            lo, hi, line = (_start(sp), _end(sp), sp.line) if sp is not None else (None, None, None)
            d = self.container("[", "]", self.rows(e.items, self.item, lo, hi, line, inner_after=False))
        elif isinstance(e, ast.ListComp):
            d = _Group(_cat("[", _Indent(_cat(SOFT, self.expr(e.element), LINE, "for ", e.var, " in ",
                                              self.expr(e.iterable))), SOFT, "]"))
        elif isinstance(e, ast.HyperMap):
            d = self.hypermap(e)
        elif isinstance(e, ast.With):
            d = _cat(self.expr(e.base, _PREC_WITH), " with ", self.hypermap(e.overrides))
        elif isinstance(e, ast.UnaryOp):
            d = _cat(e.op, self.expr(e.operand, _PREC_UNARY))
        elif isinstance(e, ast.BinOp):
            p = _BINOP_PREC.get(e.op, _PREC_OR)
            d = _cat(self.expr(e.left, p), f" {e.op} ", self.expr(e.right, p + 1))
        elif isinstance(e, ast.Pipe):
            d = _cat(self.expr(e.value, _PREC_PIPE), " |> ", self.expr(e.call, _PREC_PIPE + 1))
        else:
            raise TypeError(f"cannot print {type(e).__name__} as an expression")
        if _prec(e) < min_prec:
            return _cat("(", d, ")")
        return d

    def item(self, it):
        if isinstance(it, ast.Splat):
            return _cat("*", self.expr(it.value))
        if isinstance(it, ast.Keyword):
            return _cat(it.name, "=", self.expr(it.value))
        return self.expr(it)

    def call(self, c: ast.Call):
        func = self.expr(c.func, _PREC_POSTFIX)
        sp, fs = c.span, getattr(c.func, "span", None)
        if sp is not None and fs is not None:
            lo, hi, line = _end(fs), _end(sp), fs.end_line
        else:
            lo = hi = line = None
        r = self.rows(tuple(c.args) + tuple(c.kwargs), self.item, lo, hi, line, inner_after=False)
        return _cat(func, self.container("(", ")", r))

    def hypermap(self, m: ast.HyperMap):
        sp = m.span
        lo, hi, line = (_start(sp), _end(sp), sp.line) if sp is not None else (None, None, None)
        r = self.rows(m.entries, self.entry, lo, hi, line, inner_after=False)
        return self.container("{", "}", r)

    def entry(self, e: ast.MapEntry):
        return _cat(selector_text(e.selector), ": ", self.expr(e.value))


def _first_char(doc) -> str:
    stack = [doc]
    while stack:
        d = stack.pop()
        if isinstance(d, str):
            if d:
                return d[0]
        elif isinstance(d, _Concat):
            stack.extend(reversed(d.parts))
        elif isinstance(d, (_Group, _Indent)):
            stack.append(d.contents)
        elif isinstance(d, _Text):
            return d.text[:1]
    return ""


def selector_text(s, min_prec: int = 0) -> str:
    if isinstance(s, ast.SelDefault):
        text = "default"
    elif isinstance(s, ast.SelName):
        text = s.name
    elif isinstance(s, ast.SelRange):
        text = f"{s.start}..{s.end}"
    elif isinstance(s, ast.SelGlob):
        text = quote(s.pattern)
    elif isinstance(s, ast.SelKey):
        text = f"key({quote(s.pattern)})"
    elif isinstance(s, ast.SelAnd):
        text = f"{selector_text(s.left, 1)} & {selector_text(s.right, 2)}"
    elif isinstance(s, ast.SelNot):
        text = f"!{selector_text(s.operand, 2)}"
    else:
        raise TypeError(f"cannot print {type(s).__name__} as a selector")
    return f"({text})" if _sel_prec(s) < min_prec else text


def type_text(t: ast.TypeExpr) -> str:
    if t.args:
        return f"{t.name}[{', '.join(type_text(a) for a in t.args)}]"
    return t.name


# ------------------------------------------------------------------------------------------------
# Public API


def print_module(m: ast.Module) -> str:
    """The canonical text of a module, comments included; ends with one newline (or is empty)."""
    return _Printer(m.comments).module(m)


def print_expr(e) -> str:
    """The canonical text of an expression (lines may break past 100 columns)."""
    return _layout(_Printer(()).expr(e))


def print_stmt(s) -> str:
    """The canonical text of one statement (or a bare expression), without comments."""
    return _layout(_Printer(()).stmt(s))


def print_type(t: ast.TypeExpr) -> str:
    return type_text(t)


def print_selector(s) -> str:
    return selector_text(s)
