"""Building the AST from Lark's parse tree, iteratively (trees may be deep), with a span on every
node; string escapes and number literals are checked here."""

from __future__ import annotations

import math
import re
from typing import Callable

from lark import Token, Tree

from ..diagnostics import Diagnostic, Label, Span, codes, error
from . import ast
from .comments import scan_comments
from .explain import _show
from .grammar import MAX_INT_DIGITS, MAX_NESTING, RESERVED_WORDS


class _TooDeep(Exception):
    def __init__(self, diagnostic: Diagnostic):
        self.diagnostic = diagnostic



_SIMPLE_ESCAPES = {"\\": "\\", '"': '"', "n": "\n", "t": "\t", "r": "\r", "0": "\0"}


class _Builder:
    def __init__(self, file: str, text: str):
        self.file = file
        self.text = text
        self.diags: list[Diagnostic] = []

    # -- traversal ---------------------------------------------------------------------------

    def build(self, tree: Tree):
        work: list[tuple[object, bool]] = [(tree, False)]
        vals: list[tuple[object, int]] = []
        while work:
            node, done = work.pop()
            if not isinstance(node, Tree):
                vals.append((node, 0))
                continue
            if not done:
                work.append((node, True))
                for child in reversed(node.children):
                    work.append((child, False))
                continue
            n = len(node.children)
            kids = vals[len(vals) - n:]
            del vals[len(vals) - n:]
            rule = str(node.data)
            # Every level of Lark's tree counts (a call is two: the call and its arguments), so
            # a pass over the AST that spends a few frames per node stays within Python's limit.
            depth = max((d for _, d in kids), default=0) + 1
            if depth > MAX_NESTING:
                raise _TooDeep(error(
                    codes.NESTING_TOO_DEEP, f"nesting too deep: more than {MAX_NESTING} levels",
                    Span.point(self.file, node.meta.line, node.meta.column), label="too deeply nested",
                    help="split the expression into several `let` statements"))
            method: Callable = getattr(self, "r_" + rule)
            vals.append((method(node.meta, [v for v, _ in kids]), depth))
        return vals[0][0]

    # -- helpers -----------------------------------------------------------------------------

    def span(self, meta) -> Span | None:
        if getattr(meta, "empty", True):
            return None
        return Span(self.file, meta.line, meta.column, meta.end_line, meta.end_column)

    def tspan(self, tok: Token) -> Span:
        return Span(self.file, tok.line, tok.column, tok.end_line, tok.end_column)

    def name(self, tok: Token) -> str:
        # Reserved words are lexed as keywords everywhere, so a NAME is never one; keep the
        # check as a guard for trees built by other means.
        if str(tok) in RESERVED_WORDS:  # pragma: no cover
            self.diags.append(error(codes.EXPECTED_NAME, f"`{tok}` is a keyword and cannot be used as a name",
                                    self.tspan(tok)))
        return str(tok)

    def string(self, tok: Token) -> str:
        raw = str(tok)[1:-1]
        out: list[str] = []
        i = 0
        n = len(raw)
        while i < n:
            c = raw[i]
            if c != "\\":
                out.append(c)
                i += 1
                continue
            nxt = raw[i + 1] if i + 1 < n else ""
            if nxt in _SIMPLE_ESCAPES and nxt:
                out.append(_SIMPLE_ESCAPES[nxt])
                i += 2
                continue
            col = tok.column + 1 + i
            if nxt == "u":
                m = re.match(r"\{([0-9A-Fa-f]{1,6})\}", raw[i + 2:])
                if m is not None:
                    cp = int(m.group(1), 16)
                    if cp <= 0x10FFFF and not 0xD800 <= cp <= 0xDFFF:
                        out.append(chr(cp))
                        i += 2 + m.end()
                        continue
                    width = 2 + m.end()
                    reason = "is a surrogate" if cp <= 0x10FFFF else "is beyond U+10FFFF"
                    self.diags.append(error(
                        codes.INVALID_UNICODE_ESCAPE, f"invalid unicode escape `{raw[i:i + width]}`: U+{cp:X} {reason}",
                        Span(self.file, tok.line, col, tok.line, col + width),
                        label="not a unicode scalar value"))
                    i += width
                    continue
                m2 = re.match(r"\{[^}\"]*\}?", raw[i + 2:])
                width = 2 + (m2.end() if m2 else 0)
                self.diags.append(error(
                    codes.INVALID_UNICODE_ESCAPE, f"invalid unicode escape `{raw[i:i + width]}`",
                    Span(self.file, tok.line, col, tok.line, col + width),
                    label="invalid escape", help="write a code point as `\\u{1F600}` (1 to 6 hex digits)"))
                i += width
                continue
            shown = nxt if nxt.isprintable() else f"U+{ord(nxt):04X}"
            self.diags.append(error(
                codes.UNKNOWN_ESCAPE, f"unknown escape `\\{shown}` in string",
                Span(self.file, tok.line, col, tok.line, col + 2), label="unknown escape",
                help='escapes are `\\\\`, `\\"`, `\\n`, `\\t`, `\\r`, `\\0` and `\\u{...}`; '
                     'write `\\\\` for a backslash (paths may also use `/`)'))
            out.append(nxt)
            i += 2
        return "".join(out)

    def check_number(self, tok: Token) -> None:
        text = str(tok)
        if text in ("inf", "nan"):
            return
        digits = text.replace("_", "")
        if any(c in digits for c in ".eE"):
            if math.isinf(float(digits)):
                self.diags.append(error(
                    codes.FLOAT_TOO_LARGE, f"number `{_show(tok)}` is too large for a float", self.tspan(tok),
                    label="overflows to infinity", help="write `inf` for infinity"))
            return
        too_long = len(digits) > MAX_INT_DIGITS
        if not too_long:
            try:
                int(digits)
            except ValueError:
                too_long = True
        if too_long:
            self.diags.append(error(
                codes.INTEGER_TOO_LONG, f"integer literal is too long ({len(digits)} digits; at most {MAX_INT_DIGITS})",
                self.tspan(tok), label="too many digits"))

    # -- rules -------------------------------------------------------------------------------

    def r_module(self, meta, kids):
        lines = self.text.split("\n")
        span = Span(self.file, 1, 1, len(lines), len(lines[-1]) + 1)
        return ast.Module(tuple(kids), comments=scan_comments(self.text), span=span)

    def r_expression(self, meta, kids):
        return kids[0]

    def r_repl(self, meta, kids):
        return kids[0]

    def r_import_stmt(self, meta, kids):
        path, alias = kids
        return ast.Import(self.string(path), self.name(alias), span=self.span(meta),
                          alias_span=self.tspan(alias))

    def r_from_stmt(self, meta, kids):
        path, *names = kids
        return ast.FromImport(self.string(path), tuple(names), span=self.span(meta))

    def r_import_name(self, meta, kids):
        name = self.name(kids[0])
        alias = self.name(kids[1]) if len(kids) > 1 else None
        return ast.ImportName(name, alias, span=self.span(meta))

    def r_param_stmt(self, meta, kids):
        name, type_, default = kids
        return ast.Param(self.name(name), type_, default, span=self.span(meta), name_span=self.tspan(name))

    def r_let_stmt(self, meta, kids):
        name, type_, value = kids
        return ast.Let(self.name(name), value, type_, span=self.span(meta), name_span=self.tspan(name))

    def r_def_stmt(self, meta, kids):
        name, params, body = kids
        return ast.Def(self.name(name), tuple(params or ()), body, span=self.span(meta),
                       name_span=self.tspan(name))

    def r_def_params(self, meta, kids):
        return tuple(kids)

    def r_def_param(self, meta, kids):
        name, type_, default = kids
        return ast.DefParam(self.name(name), default, type_, span=self.span(meta))

    def r_block(self, meta, kids):
        *lets, result = kids
        return ast.Block(tuple(lets), result, span=self.span(meta))

    def r_export_stmt(self, meta, kids):
        value, path, dtype, arguments, call = kids
        name = self.name(dtype) if dtype is not None else None
        fmt = None
        if call is not None:  # `as NAME(...)`: a format with options, kept as the call it reads as
            fmt = self.r_call(meta, [ast.Name(name, span=self.tspan(dtype)), arguments])
        return ast.Export(value, path, name, fmt, span=self.span(meta))

    def r_export_map(self, meta, kids):
        value, path, dtypes = kids
        return ast.Export(value, path, None, None, dtypes, span=self.span(meta))

    def r_export_call(self, meta, kids):
        return True

    def r_type(self, meta, kids):
        name, args = kids
        return ast.TypeExpr(self.name(name), tuple(args or ()), span=self.span(meta))

    def r_type_args(self, meta, kids):
        return tuple(kids)

    def r_pipe(self, meta, kids):
        value, call = kids
        if not isinstance(call, ast.Call):
            self.diags.append(error(
                codes.PIPE_NEEDS_CALL, "the right side of `|>` must be a call", call.span,
                label="not a call", help="write `x |> f(y)`, meaning `f(x, y)` (or `x |> f()`)"))
            call = ast.Call(call, span=call.span)
        return ast.Pipe(value, call, span=self.span(meta))

    def r_binop(self, meta, kids):
        left, op, right = kids
        return ast.BinOp(str(op), left, right, span=self.span(meta))

    def r_neg(self, meta, kids):
        return ast.UnaryOp("-", kids[1], span=self.span(meta))

    def r_with_(self, meta, kids):
        base, overrides = kids
        return ast.With(base, overrides, span=self.span(meta))

    def r_call(self, meta, kids):
        func, arguments = kids
        args: list = []
        kwargs: list = []
        for a in arguments or ():
            if isinstance(a, ast.Keyword):
                kwargs.append(a)
                continue
            if kwargs:
                self.diags.append(error(
                    codes.POSITIONAL_AFTER_KEYWORD, "positional argument after keyword argument", a.span,
                    label="positional argument", secondary=[Label(kwargs[0].span, "keyword argument")]
                    if kwargs[0].span else [],
                    help="put positional arguments (and `*` splats) before keyword arguments"))
            args.append(a)
        return ast.Call(func, tuple(args), tuple(kwargs), span=self.span(meta))

    def r_arguments(self, meta, kids):
        return tuple(kids)

    def r_splat(self, meta, kids):
        return ast.Splat(kids[1], span=self.span(meta))

    def r_kwarg(self, meta, kids):
        name, value = kids
        return ast.Keyword(self.name(name), value, span=self.span(meta), name_span=self.tspan(name))

    def r_attr(self, meta, kids):
        value, name = kids
        return ast.Attribute(value, self.name(name), span=self.span(meta))

    def r_index(self, meta, kids):
        value, index = kids
        return ast.Index(value, index, span=self.span(meta))

    def r_number(self, meta, kids):
        tok = kids[0]
        self.check_number(tok)
        return ast.Number(str(tok), span=self.span(meta))

    def r_string(self, meta, kids):
        return ast.String(self.string(kids[0]), span=self.span(meta))

    def r_true(self, meta, kids):
        return ast.Bool(True, span=self.span(meta))

    def r_false(self, meta, kids):
        return ast.Bool(False, span=self.span(meta))

    def r_name(self, meta, kids):
        return ast.Name(self.name(kids[0]), span=self.span(meta))

    def r_list(self, meta, kids):
        return ast.ListExpr(tuple(kids), span=self.span(meta))

    def r_listcomp(self, meta, kids):
        element, var, iterable = kids
        return ast.ListComp(element, self.name(var), iterable, span=self.span(meta), var_span=self.tspan(var))

    def r_hypermap(self, meta, kids):
        return ast.HyperMap(tuple(kids), span=self.span(meta))

    def r_map_entry(self, meta, kids):
        selector, value = kids
        return ast.MapEntry(selector, value, span=self.span(meta))

    def r_sel_and(self, meta, kids):
        return ast.SelAnd(kids[0], kids[1], span=self.span(meta))

    def r_sel_not(self, meta, kids):
        return ast.SelNot(kids[0], span=self.span(meta))

    def r_sel_default(self, meta, kids):
        return ast.SelDefault(span=self.span(meta))

    def r_sel_name(self, meta, kids):
        return ast.SelName(self.name(kids[0]), span=self.span(meta))

    def r_sel_range(self, meta, kids):
        return ast.SelRange(self.name(kids[0]), self.name(kids[1]), span=self.span(meta))

    def r_sel_glob(self, meta, kids):
        return ast.SelGlob(self.string(kids[0]), span=self.span(meta))

    def r_sel_key(self, meta, kids):
        return ast.SelKey(self.string(kids[0]), span=self.span(meta))
