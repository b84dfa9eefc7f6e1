"""Syntax errors in the user's terms. The driver feeds Lark's LALR(1) parser token by token,
tracking open brackets and what came before, so that an error says which bracket is open, what was
expected and what to write instead, rather than listing Lark terminal names."""

from __future__ import annotations

from dataclasses import dataclass

from lark import Token, Tree
from lark.exceptions import UnexpectedCharacters, UnexpectedInput, UnexpectedToken

from ..diagnostics import Diagnostic, Label, Span, codes, error
from .grammar import _RESERVED_TERMINALS, MAX_NESTING, _lark

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
