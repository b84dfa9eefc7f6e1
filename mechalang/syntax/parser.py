"""Reading and parsing `.mecha` recipes.

`read_source` turns a path into text (or diagnostics), `parse` turns text into an `ast.Module` (or
diagnostics). Neither raises on bad input. The grammar is `mechalang/grammar/mecha.lark`, parsed by
Lark's LALR(1) parser token by token, so that a syntax error can be explained in the user's terms
(which bracket is open, what came before) rather than as a list of Lark terminal names.

Diagnostic codes:

    E0001  file not found                      E0101  unexpected character
    E0002  path is a directory                 E0102  unterminated string
    E0003  file cannot be read                 E0103  unexpected token (expected something else)
    E0004  file is not valid UTF-8             E0104  unexpected end of file
    E0005  file contains a NUL byte            E0105  unclosed bracket
    E0006  path is not a regular file          E0106  unmatched closing bracket
    E0007  file cannot be written (fmt)        E0107  missing `,`
    E0008  formatter bug, file left unchanged  E0108  expected an expression
                                               E0109  expected a name
    E0110  nesting too deep                    E0116  positional argument after keyword argument
    E0111  unknown escape in a string          E0117  right side of `|>` is not a call
    E0112  invalid unicode escape              E0118  block without a result expression
    E0113  number too large for a float        E0119  expected a selector
    E0114  integer literal too long            E0199  internal parser error (a bug)
    E0115  invalid number literal
"""

from __future__ import annotations

import math
import os
import re
import stat
import threading
from bisect import bisect_right
from dataclasses import dataclass
from importlib import resources
from typing import Callable, Iterable

from lark import Lark, Token, Tree
from lark.exceptions import UnexpectedCharacters, UnexpectedInput, UnexpectedToken

from ..diagnostics import Diagnostic, Label, Span, codes, error
from . import ast

# Deeper brackets, and deeper trees, are rejected, so that every later pass may recurse over the
# tree with Python's default recursion limit.
MAX_NESTING = 200
# At most this many syntax errors are reported for one file (each after resynchronising at a
# statement keyword that starts a line).
MAX_SYNTAX_ERRORS = 10
# Python refuses to convert longer digit strings to int (sys.int_info.default_max_str_digits).
MAX_INT_DIGITS = 4300

RESERVED_WORDS = frozenset({
    "import", "from", "as", "param", "let", "def", "export", "to", "with", "for", "in",
    "true", "false", "inf", "nan",
})
# Keywords only where a selector may start; ordinary names elsewhere.
SELECTOR_WORDS = frozenset({"default", "key"})

_RESERVED_TERMINALS = (
    "_IMPORT", "_FROM", "_AS", "_PARAM", "_LET", "_DEF", "_EXPORT", "_TO", "_WITH", "_FOR", "_IN",
    "TRUE", "FALSE", "INF", "NAN",
)

# ------------------------------------------------------------------------------------------------
# The Lark parser, built once


class _ReservedWords:
    """A no-op post-lexer whose only job is to make reserved words lexable in every state."""

    always_accept = _RESERVED_TERMINALS

    def process(self, stream):
        return stream


_PARSER: Lark | None = None
_PARSER_LOCK = threading.Lock()


def _lark() -> Lark:
    global _PARSER
    if _PARSER is None:
        with _PARSER_LOCK:
            if _PARSER is None:
                grammar = resources.files("mechalang").joinpath("grammar/mecha.lark").read_text("utf-8")
                _PARSER = Lark(
                    grammar,
                    parser="lalr",
                    lexer="contextual",
                    postlex=_ReservedWords(),
                    propagate_positions=True,
                    maybe_placeholders=True,
                    start=["module", "expression", "repl"],
                    # The grammar analysis is cached in the temp folder (keyed by the grammar's
                    # hash), so a fresh process builds the parser in milliseconds.
                    cache=True,
                )
    return _PARSER


# ------------------------------------------------------------------------------------------------
# Reading files


def read_source(path: str) -> tuple[str | None, list[Diagnostic]]:
    """The text of a recipe file, or diagnostics saying why it cannot be read."""
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None, [error(codes.SOURCE_NOT_FOUND, f"no such file: `{path}`")]
    except PermissionError:
        return None, [error(codes.SOURCE_UNREADABLE, f"cannot read `{path}`: permission denied")]
    except (OSError, ValueError) as e:  # ValueError: a path with a NUL character
        return None, [error(codes.SOURCE_UNREADABLE, f"cannot read `{path}`: {getattr(e, 'strerror', None) or e}")]
    if stat.S_ISDIR(st.st_mode):
        return None, [error(codes.SOURCE_IS_DIRECTORY, f"`{path}` is a directory, not a recipe file",
                            help="pass the path of a `.mecha` file")]
    if not stat.S_ISREG(st.st_mode):
        return None, [error(codes.SOURCE_NOT_REGULAR, f"`{path}` is not a regular file")]
    try:
        with open(path, "rb") as f:
            data = f.read()
    except PermissionError:
        return None, [error(codes.SOURCE_UNREADABLE, f"cannot read `{path}`: permission denied")]
    except OSError as e:
        return None, [error(codes.SOURCE_UNREADABLE, f"cannot read `{path}`: {e.strerror or e}")]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line, col = _byte_position(data, e.start)
        bad = data[e.start:e.start + 1].hex()
        return None, [error(
            codes.SOURCE_NOT_UTF8, f"`{path}` is not valid UTF-8: invalid byte 0x{bad} at {line}:{col}",
            Span(path, line, col, line, col + 1), label="invalid UTF-8 here",
            help="recipes are UTF-8 text; re-save the file as UTF-8")]
    if text.startswith("\ufeff"):
        text = text[1:]
    nul = text.find("\x00")
    if nul >= 0:
        line = text.count("\n", 0, nul) + 1
        col = nul - (text.rfind("\n", 0, nul) + 1) + 1
        return None, [error(
            codes.SOURCE_HAS_NUL, f"`{path}` contains a NUL byte at {line}:{col}; is it a binary file?",
            Span(path, line, col, line, col + 1), label="NUL byte",
            help="`mecha` reads recipe text; pass a `.mecha` file")]
    return text, []


def _byte_position(data: bytes, offset: int) -> tuple[int, int]:
    """1-based line and column (in characters) of the byte at `offset` of UTF-8 `data`."""
    line_start = data.rfind(b"\n", 0, offset) + 1
    line = data.count(b"\n", 0, offset) + 1
    prefix = data[line_start:offset].decode("utf-8", errors="replace")
    return line, len(prefix) + 1


# ------------------------------------------------------------------------------------------------
# Public parsing API


def parse(text: str, file: str) -> tuple[ast.Module | None, list[Diagnostic]]:
    """Parse a whole recipe. The module is None exactly when there are errors."""
    result, diags = _parse_entry(text, file, "module")
    return result, diags  # type: ignore[return-value]


def parse_expression(text: str, file: str) -> tuple[ast.Expr | None, list[Diagnostic]]:
    """Parse one expression (for `--set name=EXPR`, tests and tools)."""
    return _parse_entry(text, file, "expression")  # type: ignore[return-value]


def parse_repl_input(text: str, file: str) -> tuple[ast.Stmt | ast.Expr | None, list[Diagnostic]]:
    """Parse one REPL input: a statement or an expression. Blank input gives (None, [])."""
    if not _strip_comments(text).strip():
        return None, []
    return _parse_entry(text, file, "repl")  # type: ignore[return-value]


def scan_comments(text: str) -> tuple[ast.Comment, ...]:
    """Every `# ...` comment of a text that lexes (strings are skipped, so `"#"` is no comment)."""
    starts = _line_starts(text)
    out = []
    for m in _STRING_OR_COMMENT.finditer(text):
        if m.group(0).startswith("#"):
            pos = m.start()
            line = bisect_right(starts, pos)
            col = pos - starts[line - 1] + 1
            own_line = text[starts[line - 1]:pos].strip() == ""
            out.append(ast.Comment(m.group(0).rstrip(), line, col, own_line))
    return tuple(out)


_STRING_OR_COMMENT = re.compile(r'"(?:[^"\\\n\r]|\\[^\n\r])*"|#[^\n]*')


def _strip_comments(text: str) -> str:
    return _STRING_OR_COMMENT.sub(lambda m: m.group(0) if m.group(0).startswith('"') else "", text)


def _line_starts(text: str) -> list[int]:
    starts = [0]
    for m in re.finditer("\n", text):
        starts.append(m.end())
    return starts


# ------------------------------------------------------------------------------------------------
# Driver: parse, explain errors, resynchronise, build the AST


def _parse_entry(text: str, file: str, start: str):
    try:
        return _parse_recovering(text, file, start)
    except RecursionError:  # pragma: no cover - the nesting limits exist to prevent this
        return None, [error(codes.NESTING_TOO_DEEP, "nesting too deep for the parser", Span.point(file, 1, 1))]
    except Exception as e:  # pragma: no cover - a bug; never crash the caller
        return None, [error(codes.PARSER_INTERNAL, f"internal parser error: {type(e).__name__}: {e}",
                            Span.point(file, 1, 1),
                            help="this is a bug in mechalang; please report it with the file")]


_RESYNC = re.compile(r"^(?:import|from|param|let|def|export)\b", re.M)


def _parse_recovering(text: str, file: str, start: str):
    diags: list[Diagnostic] = []
    chunk_start = 0
    source = text
    while True:
        tree, errs, err_pos = _parse_tree(source, file, start)
        if tree is not None:
            ctx = _Builder(file, text)
            try:
                result = ctx.build(tree)
            except _TooDeep as deep:
                diags.append(deep.diagnostic)
                return None, diags
            diags.extend(ctx.diags)
            if diags:
                return None, diags
            return result, []
        diags.extend(errs)
        if start != "module" or len(diags) >= MAX_SYNTAX_ERRORS:
            return None, diags
        resume = None
        for m in _RESYNC.finditer(text, max(err_pos, chunk_start + 1)):
            resume = m.start()
            break
        if resume is None:
            return None, diags
        chunk_start = resume
        source = _mask(text, resume)


def _mask(text: str, upto: int) -> str:
    """`text` with everything before `upto` blanked out (newlines kept, so positions stay)."""
    return re.sub(r"[^\n]", " ", text[:upto]) + text[upto:]


# Terminal classes used to explain errors.
_OPENERS = {"_LPAR": ")", "_LSQB": "]", "_LBRACE": "}"}
_CLOSERS = {"_RPAR": "(", "_RSQB": "[", "_RBRACE": "{"}
_EXPR_START = {"NAME", "NUMBER", "INF", "NAN", "STRING", "TRUE", "FALSE", "_LPAR", "_LSQB",
               "_LBRACE", "MINUS"}
_ITEM_START = _EXPR_START | {"STAR", "DEFAULT", "_KEY", "_BANG"}
_ENDS_EXPR = {"NAME", "NUMBER", "INF", "NAN", "STRING", "TRUE", "FALSE", "_RPAR", "_RSQB", "_RBRACE"}
_STATEMENT_KEYWORDS = {"_IMPORT", "_FROM", "_PARAM", "_LET", "_DEF", "_EXPORT"}
_WORDLIKE = {"NAME", "NUMBER", "INF", "NAN", "TRUE", "FALSE", "DEFAULT", "_KEY"} | set(_RESERVED_TERMINALS)

_TERMINAL_WORDS = {
    "NAME": "a name", "NUMBER": "a number", "STRING": "a string", "INF": "`inf`", "NAN": "`nan`",
    "TRUE": "`true`", "FALSE": "`false`", "DEFAULT": "`default`", "_KEY": "`key`",
    "$END": "the end of the file", "VBAR": "`|`", "PLUS": "`+`", "MINUS": "`-`", "STAR": "`*`",
    "SLASH": "`/`", "_PIPE": "`|>`", "_AMP": "`&`", "_BANG": "`!`", "_DOTDOT": "`..`", "_DOT": "`.`",
    "_COMMA": "`,`", "_COLON": "`:`", "_SEMI": "`;`", "_EQUAL": "`=`", "_LPAR": "`(`",
    "_RPAR": "`)`", "_LSQB": "`[`", "_RSQB": "`]`", "_LBRACE": "`{`", "_RBRACE": "`}`",
}
for _t in _RESERVED_TERMINALS:
    _TERMINAL_WORDS.setdefault(_t, f"`{_t.strip('_').lower()}`")

_CONTAINER_ITEMS = {
    "map": "map entries", "list": "list items", "call": "arguments", "params": "parameters",
    "index": "type arguments", None: "imported names",
}


@dataclass
class _Open:
    token: Token
    kind: str  # call, group, params, key, list, index, map, block


class _Stop(Exception):
    def __init__(self, diagnostic: Diagnostic, pos: int):
        self.diagnostic = diagnostic
        self.pos = pos


def _parse_tree(text: str, file: str, start: str) -> tuple[Tree | None, list[Diagnostic], int]:
    """Parse with Lark token by token, keeping the context needed to explain an error.

    Returns the tree, or None, the diagnostic of the first error, and the error's offset.
    """
    ip = _lark().parse_interactive(text, start=start)
    tracker = _Tracker(file)
    pending: Token | None = None
    try:
        for tok in ip.iter_parse():
            if pending is not None:
                tracker.accept(pending)
            pending = tok
        if pending is not None:
            tracker.accept(pending)
            pending = None
        tree = ip.feed_eof(tracker.prev)
        return tree, [], -1
    except _Stop as stop:
        return None, [stop.diagnostic], stop.pos
    except UnexpectedToken as e:
        tok = e.token
        if pending is not None and (tok is not pending or tok.type == "$END"):
            # The lexer failed on the token after `pending`, or the file ended: `pending` was fed.
            try:
                tracker.accept(pending)
            except _Stop as stop:
                return None, [stop.diagnostic], stop.pos
        expected = _expected_terminals(ip, e, text, start, tok if tok is pending or tok.type == "$END" else None)
        d = _explain_token(tok, expected, tracker, text, file)
        pos = tok.start_pos if tok.type != "$END" and tok.start_pos is not None else len(text)
        return None, [d], pos
    except UnexpectedCharacters as e:
        if pending is not None:
            try:
                tracker.accept(pending)
            except _Stop as stop:
                return None, [stop.diagnostic], stop.pos
        return None, [_explain_character(e, text, file)], e.pos_in_stream
    except UnexpectedInput as e:  # pragma: no cover - other Lark errors
        pos = getattr(e, "pos_in_stream", 0) or 0
        line, col = getattr(e, "line", 1) or 1, getattr(e, "column", 1) or 1
        return None, [error(codes.UNEXPECTED_TOKEN, "syntax error", Span.point(file, line, col))], pos


def _expected_terminals(ip, e: UnexpectedToken, text: str, start: str, fed: Token | None) -> set[str]:
    """The terminals the parser could take where it met the unexpected token.

    Not `e.expected`: when the contextual lexer raises, that is the lexer state's terminal set
    (with the reserved words accepted everywhere); when the parser raises, it has already made the
    reductions the token asked for, so the set has shrunk (after `(a b` it holds only `)`, not
    the operators). `fed` is the token the parser rejected (None when the lexer raised, leaving
    the parser untouched): then the text is parsed again up to that token. `accepts()` tries each
    terminal on a copy of the parser, which is exact even with LALR's merged look-ahead sets.
    """
    try:
        if fed is not None:
            ip = _lark().parse_interactive(text, start=start)
            for t in ip.iter_parse():
                if fed.type != "$END" and t.start_pos == fed.start_pos:
                    break
        return set(ip.accepts())
    except Exception:  # pragma: no cover - Lark internals changed
        return set(e.expected or ())


class _Tracker:
    """Open brackets and the last two tokens, as the parser accepts them."""

    def __init__(self, file: str):
        self.file = file
        self.stack: list[_Open] = []
        self.prev: Token | None = None
        self.prev2: Token | None = None

    def accept(self, tok: Token) -> None:
        t = tok.type
        if t in _OPENERS:
            self.stack.append(_Open(tok, self._classify(tok)))
            if len(self.stack) > MAX_NESTING:
                raise _Stop(error(
                    codes.NESTING_TOO_DEEP, f"nesting too deep: more than {MAX_NESTING} levels of brackets",
                    _tok_span(self.file, tok), label="too deeply nested",
                    help="split the expression into several `let` statements"), tok.start_pos)
        elif t in _CLOSERS:
            if self.stack:
                self.stack.pop()
        elif t == "_LET" and self.stack and self.stack[-1].kind == "map" and self.prev is self.stack[-1].token:
            self.stack[-1].kind = "block"
        self.prev2, self.prev = self.prev, tok

    def _classify(self, tok: Token) -> str:
        prev, prev2 = self.prev, self.prev2
        pt = prev.type if prev is not None else None
        if tok.type == "_LPAR":
            if pt == "NAME" and prev2 is not None and prev2.type == "_DEF":
                return "params"
            if pt == "_KEY":
                return "key"
            return "call" if pt in _ENDS_EXPR else "group"
        if tok.type == "_LSQB":
            return "index" if pt in _ENDS_EXPR else "list"
        return "map"


def _tok_span(file: str, tok: Token) -> Span:
    return Span(file, tok.line, tok.column, tok.end_line, tok.end_column)


def _after_span(file: str, tok: Token | None) -> Span:
    if tok is None:
        return Span.point(file, 1, 1)
    return Span(file, tok.end_line, tok.end_column, tok.end_line, tok.end_column + 1)


def _show(tok: Token) -> str:
    s = str(tok)
    return s if len(s) <= 30 else s[:27] + "..."


def _describe(tok: Token) -> str:
    t = tok.type
    if t == "$END":
        return "the end of the file"
    if t == "NAME":
        return f"name `{_show(tok)}`"
    if t in ("NUMBER", "INF", "NAN"):
        return f"number `{_show(tok)}`"
    if t == "STRING":
        return f"string `{_show(tok)}`"
    return f"`{tok}`"


def _where(tok: Token) -> str:
    return f"{tok.line}:{tok.column}"


def _list_words(words: list[str]) -> str:
    if len(words) == 1:
        return words[0]
    return ", ".join(words[:-1]) + " or " + words[-1]


def _describe_expected(expected: set[str]) -> str:
    words = []
    if "NUMBER" in expected:
        words.append("an expression")
    if "DEFAULT" in expected:
        words.append("a selector")
    if _STATEMENT_KEYWORDS & expected and "NUMBER" not in expected:
        words.append("a statement")
    skip = set()
    if "NUMBER" in expected:
        skip |= _EXPR_START
    if "DEFAULT" in expected:
        skip |= {"NAME", "STRING", "DEFAULT", "_KEY", "_BANG", "_LPAR"}
    if "a statement" in words:
        skip |= _STATEMENT_KEYWORDS
    if "PLUS" in expected:
        words.append("an operator")
        skip |= {"PLUS", "MINUS", "STAR", "SLASH", "VBAR", "_PIPE", "_WITH", "_DOT", "_LPAR", "_LSQB"}
    for t in sorted(expected - skip, key=lambda t: (t == "$END", t)):
        w = _TERMINAL_WORDS.get(t)
        if w and w not in words:
            words.append(w)
    return _list_words(words) if words else "something else"


_STATEMENT_HELP = "statements start with `let`, `param`, `def`, `export`, `import` or `from`"


def _explain_token(tok: Token, expected: set[str], tr: _Tracker, text: str, file: str) -> Diagnostic:
    t = tok.type
    prev, prev2 = tr.prev, tr.prev2
    top = tr.stack[-1] if tr.stack else None
    eof = t == "$END"
    here = _after_span(file, prev) if eof else _tok_span(file, tok)
    found = _describe(tok)
    wants_expr = "NUMBER" in expected
    after = f" after `{prev}`" if prev is not None else ""

    def unclosed_label(o: _Open) -> Label:
        return Label(_tok_span(file, o.token), f"unclosed `{o.token}`")

    # 0. a number glued to a name (`1abc`, `1_`) or ending in `.` (`1.`)
    if (not eof and prev is not None and prev.type == "NUMBER" and t in _WORDLIKE
            and prev.end_pos == tok.start_pos):
        span = Span(file, prev.line, prev.column, tok.end_line, tok.end_column)
        return error(codes.INVALID_NUMBER, f"invalid number `{prev}{tok}`", span, label="not a number",
                     help="numbers look like `3`, `0.5`, `.5`, `1e-3`, `1_000`, `inf` or `nan`")
    if (prev is not None and prev.type == "_DOT" and prev2 is not None and prev2.type == "NUMBER"
            and prev2.end_pos == prev.start_pos and t != "NAME"):
        span = Span(file, prev2.line, prev2.column, prev.end_line, prev.end_column)
        return error(codes.INVALID_NUMBER, f"invalid number `{prev2}.`", span, label="not a number",
                     help=f"write `{prev2}.0`")

    # 1. closing brackets
    if t in _CLOSERS:
        if top is None:
            if wants_expr and prev is not None:
                return error(codes.EXPECTED_EXPRESSION, f"expected an expression{after}, found `{tok}`", here,
                             label="expected an expression before this")
            return error(codes.UNMATCHED_CLOSER, f"unmatched `{tok}`", here, label=f"no `{_CLOSERS[t]}` is open here")
        if _OPENERS[top.token.type] != str(tok):
            closer = _OPENERS[top.token.type]
            return error(codes.UNCLOSED_BRACKET, f"unclosed `{top.token}` opened at {_where(top.token)}", here,
                         label=f"expected `{closer}` before this `{tok}`",
                         secondary=[unclosed_label(top)])
        if top.kind == "block" and t == "_RBRACE" and wants_expr:
            return error(codes.BLOCK_WITHOUT_RESULT, "a block needs a result expression after its `let`s", here,
                         label="expected the result expression before this `}`",
                         secondary=[Label(_tok_span(file, top.token), "block opened here")],
                         help="end the block with the value it computes, e.g. `{ let a = x * 2; a + 1 }`")

    # 2. the end of the file
    if eof:
        if top is not None and _closer_terminal(top) in expected:
            closer = _OPENERS[top.token.type]
            return error(codes.UNEXPECTED_EOF, f"unexpected end of file: unclosed `{top.token}` opened at {_where(top.token)}",
                         here, label=f"expected `{closer}`", secondary=[unclosed_label(top)])
        if wants_expr and prev is not None:
            msg = f"unexpected end of file: expected an expression{after}"
            sec = [unclosed_label(o) for o in reversed(tr.stack)][:1]
            return error(codes.UNEXPECTED_EOF, msg, here, label="expected an expression here", secondary=sec)
        if top is not None:
            closer = _OPENERS[top.token.type]
            return error(codes.UNEXPECTED_EOF, f"unexpected end of file: unclosed `{top.token}` opened at {_where(top.token)}",
                         here, label=f"expected `{closer}`", secondary=[unclosed_label(top)])
        if prev is None:
            return error(codes.UNEXPECTED_EOF, f"unexpected end of file: expected {_describe_expected(expected)}", here)
        hint = _expected_hint(expected, tr)
        return error(codes.UNEXPECTED_EOF, f"unexpected end of file: expected {hint}{after}", here,
                     label=f"expected {hint}")

    # 3. an expression is needed here
    if wants_expr and t not in _EXPR_START:
        msg = f"expected an expression{after}, found {found}"
        sec = []
        if t in _STATEMENT_KEYWORDS and top is not None:
            sec = [unclosed_label(top)]
        return error(codes.EXPECTED_EXPRESSION, msg, here, label="expected an expression before this", secondary=sec)

    # 4. a statement keyword while a bracket is still open
    if t in _STATEMENT_KEYWORDS and top is not None:
        closer = _OPENERS[top.token.type]
        return error(codes.UNCLOSED_BRACKET, f"unclosed `{top.token}` opened at {_where(top.token)}", here,
                     label=f"expected `{closer}` before this", secondary=[unclosed_label(top)])

    # 5. a selector is needed here
    if "DEFAULT" in expected and "NAME" in expected:
        return error(codes.EXPECTED_SELECTOR, f"expected a selector, found {found}", here, label="not a selector",
                     help='selectors are `default`, a name (`IN04`, `attn2`, `clip_l`), a range `IN00..IN05`, '
                          'a glob string `"OUT*"`, `key("*.proj_in.*")`, `a & b` or `!a`')

    # 6. a name is needed here
    if "NAME" in expected and not wants_expr:
        msg = _name_message(prev, top)
        if msg is not None:
            if t in _RESERVED_TERMINALS:
                msg = f"{msg}, but `{tok}` is a reserved word"
            elif not msg.startswith("`"):
                msg = f"{msg}, found {found}"
            return error(codes.EXPECTED_NAME, msg, here, label="expected a name here")

    # 7. a missing comma
    if "_COMMA" in expected and t in _ITEM_START | {"STRING"}:
        kind = top.kind if top is not None else None
        what = _CONTAINER_ITEMS.get(kind)
        if what is not None:
            return error(codes.MISSING_COMMA, f"missing `,` between {what}", here, label="expected `,` before this")

    # 8. what follows a complete expression
    if "_TO" in expected and top is None:
        return error(codes.UNEXPECTED_TOKEN, f"expected `to` after the exported value, found {found}", here,
                     label="expected `to` before this", help='write `export value to "out.safetensors"`')
    if "PLUS" in expected:
        if top is not None and top.kind in ("group", "index", "key", "block"):
            closer = _OPENERS[top.token.type]
            what = "the block" if top.kind == "block" else f"`{top.token}`"
            return error(codes.UNEXPECTED_TOKEN, f"expected `{closer}` to close {what} opened at {_where(top.token)}, found {found}",
                         here, label=f"expected `{closer}` or an operator before this",
                         secondary=[unclosed_label(top)])
        if top is None and _STATEMENT_KEYWORDS & expected:
            return error(codes.UNEXPECTED_TOKEN, f"expected an operator or a new statement, found {found}", here,
                         label="unexpected here", help=_STATEMENT_HELP)
        if top is None:
            help_ = f"did you mean `let {prev} = ...`?" if t == "_EQUAL" and prev is not None and prev.type == "NAME" else None
            return error(codes.UNEXPECTED_TOKEN, f"expected an operator or the end of the expression, found {found}", here,
                         label="unexpected here", help=help_)

    # 9. specific keywords and punctuation
    if "_COLON" in expected and top is not None and top.kind == "map":
        return error(codes.UNEXPECTED_TOKEN, f"expected `:` after the selector, found {found}", here,
                     label="expected `:` before this", help="map entries look like `selector: value`")
    if "STRING" in expected and prev is not None and prev.type in ("_IMPORT", "_FROM"):
        return error(codes.UNEXPECTED_TOKEN, f"expected a path string after `{prev}`, found {found}", here,
                     label="expected a string", help='write `import "lib/file.mecha" as name`')
    if "_EQUAL" in expected and prev is not None and prev2 is not None and prev2.type == "_LET":
        return error(codes.UNEXPECTED_TOKEN, f"expected `=` after `let {prev}`, found {found}", here,
                     label="expected `=` before this")
    if _STATEMENT_KEYWORDS & expected and top is None:
        help_ = _STATEMENT_HELP
        if t == "NAME":
            help_ = f"did you mean `let {tok} = ...`? " + _STATEMENT_HELP
        return error(codes.UNEXPECTED_TOKEN, f"expected a statement, found {found}", here, label="not a statement",
                     help=help_)
    return error(codes.UNEXPECTED_TOKEN, f"expected {_describe_expected(expected)}, found {found}", here,
                 label="unexpected here")


def _closer_terminal(o: _Open) -> str:
    return {"_LPAR": "_RPAR", "_LSQB": "_RSQB", "_LBRACE": "_RBRACE"}[o.token.type]


def _expected_hint(expected: set[str], tr: _Tracker) -> str:
    prev = tr.prev
    if "NAME" in expected and prev is not None and prev.type in ("_LET", "_PARAM", "_DEF", "_AS", "_DOT", "_FOR", "_IMPORT"):
        return "a name"
    if "_TO" in expected:
        return "`to`"
    return _describe_expected(expected)


def _name_message(prev: Token | None, top: _Open | None) -> str | None:
    if prev is None:
        return None
    p = prev.type
    if p in ("_LET", "_PARAM", "_DEF"):
        return f"`{prev}` needs a name"
    if p == "_DOT":
        return "expected a name after `.`"
    if p == "_AS":
        return "expected a name after `as`"
    if p == "_FOR":
        return "expected a variable name after `for`"
    if p == "_IMPORT":
        return "expected a name to import after `import`"
    if p == "_DOTDOT":
        return "expected a block name after `..`"
    if top is not None and top.kind == "params":
        return "expected a parameter name"
    if p in ("_COLON",):
        return "expected a type after `:`"
    return "expected a name"


def _explain_character(e: UnexpectedCharacters, text: str, file: str) -> Diagnostic:
    pos = e.pos_in_stream
    ch = text[pos] if 0 <= pos < len(text) else ""
    line, col = e.line, e.column
    if ch == '"':
        end = text.find("\n", pos)
        end = len(text) if end < 0 else end
        seg = text[pos:end].rstrip("\r")
        if "\\" in seg and seg.endswith("\\"):
            help_ = "a string cannot continue on the next line; write a newline as `\\n`"
        else:
            help_ = 'strings end with `"` on the same line; write a newline as `\\n`'
        return error(codes.UNTERMINATED_STRING, "unterminated string", Span(file, line, col, line, col + max(1, len(seg))),
                     label="this string is never closed", help=help_)
    shown = ch if ch.isprintable() and not ch.isspace() else f"U+{ord(ch):04X}"
    help_ = None
    if ch == "'":
        help_ = 'strings use double quotes: "..."'
    elif ch.isalpha():
        help_ = "names use ASCII letters, digits and `_`"
    return error(codes.UNEXPECTED_CHARACTER, f"unexpected character `{shown}`", Span(file, line, col, line, col + 1),
                 label="not valid here", help=help_)


# ------------------------------------------------------------------------------------------------
# Building the AST from Lark's tree (iteratively: trees may be deep)


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
        value, path, dtype = kids
        return ast.Export(value, path, self.name(dtype) if dtype is not None else None, span=self.span(meta))

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


def iter_nodes(node) -> Iterable[ast.Node]:
    """Every AST node under `node` (itself included), iteratively, in source order."""
    stack = [node]
    while stack:
        n = stack.pop()
        if isinstance(n, tuple):
            stack.extend(reversed(n))
            continue
        if not isinstance(n, ast.Node):
            continue
        yield n
        children = []
        for f in n.__dataclass_fields__:
            if f in ("span", "name_span", "alias_span", "var_span", "comments"):
                continue
            v = getattr(n, f)
            if isinstance(v, (ast.Node, tuple)):
                children.append(v)
        stack.extend(reversed(children))
