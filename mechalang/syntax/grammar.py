"""The Lark parser of mechalang's grammar (`mechalang/grammar/mecha.lark`), built once, and the
limits and reserved words every part of the syntax package shares."""

from __future__ import annotations

import threading
from importlib import resources

from lark import Lark

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
