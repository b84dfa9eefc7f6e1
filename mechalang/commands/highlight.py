"""Syntax highlighting of `.mecha` recipes: a Pygments lexer (`mecha fmt --color`, the REPL).

Keywords, builtins (`model`, `lora`, `mbw`, `key`, `recipe`), merge-method names (those registered
when a name is first highlighted), numbers, strings, comments, operators, block names (`IN00`,
`OUT11`, `BASE`, `L17`) and selector names (a name before `:`, `..` or `&` inside `{...}`, or a
component/block/class of a known architecture).

Nothing here imports torch.
"""

from __future__ import annotations

import re

from pygments.lexer import RegexLexer, bygroups, words
from pygments.token import Comment, Keyword, Name, Number, Operator, Punctuation, String, Text, Whitespace

KEYWORDS = ("let", "def", "export", "import", "from", "param", "as", "to", "in", "for", "if", "else",
            "with", "default")
CONSTANTS = ("true", "false", "inf", "nan")
BUILTINS = ("model", "lora", "mbw", "key", "recipe")
TYPES = ("Model", "Delta", "Float", "Int", "Bool", "String", "Str", "List", "Hyper", "Weight", "Adapter")

_BLOCK = re.compile(r"(?:BASE|(?:IN|OUT|M|L|T|D|S|B)\d+|[A-Z][A-Z_]*\d+)$")
_NAME = r"[A-Za-z_][A-Za-z0-9_]*"

_methods: frozenset[str] | None = None
_selectors: frozenset[str] | None = None


def method_names() -> frozenset[str]:
    global _methods
    if _methods is None:
        try:
            from ..methods import REGISTRY

            _methods = frozenset(REGISTRY.names())
        except Exception:  # pragma: no cover - highlighting never fails
            _methods = frozenset()
    return _methods


def selector_names() -> frozenset[str]:
    global _selectors
    if _selectors is None:
        try:
            from ..archs.registry import all_selector_names

            _selectors = frozenset(all_selector_names())
        except Exception:  # pragma: no cover
            _selectors = frozenset()
    return _selectors


class MechaLexer(RegexLexer):
    name = "mechalang"
    aliases = ["mecha", "mechalang"]
    filenames = ["*.mecha"]
    mimetypes = ["text/x-mecha"]

    tokens = {
        "root": [
            (r"[ \t\f\r\n]+", Whitespace),
            (r"#[^\n]*", Comment.Single),
            (r'"(?:[^"\\\n\r]|\\[^\n\r])*"', String.Double),
            (r'"[^\n]*', String.Double),  # unterminated (while typing)
            (r"((?:let|param))(\s+)(" + _NAME + ")", bygroups(Keyword.Declaration, Whitespace, Name.Variable)),
            (r"(def)(\s+)(" + _NAME + ")", bygroups(Keyword.Declaration, Whitespace, Name.Function)),
            (words(KEYWORDS, suffix=r"\b"), Keyword),
            (words(CONSTANTS, suffix=r"\b"), Keyword.Constant),
            (words(BUILTINS, suffix=r"\b(?=\s*\()"), Name.Builtin),
            (words(TYPES, suffix=r"\b"), Keyword.Type),
            (r"(?:[0-9](?:_?[0-9])*)?\.[0-9](?:_?[0-9])*(?:[eE][+-]?[0-9](?:_?[0-9])*)?", Number.Float),
            (r"[0-9](?:_?[0-9])*[eE][+-]?[0-9](?:_?[0-9])*", Number.Float),
            (r"[0-9](?:_?[0-9])*", Number.Integer),
            (_NAME + r"(?=\s*(?::(?!:)|\.\.|&))", Name.Label),  # a selector (also `let x: T`'s x)
            (_NAME, Name),
            (r"\|>|\.\.|[|+\-*/&!=:]", Operator),
            (r"[()\[\]{},;.]", Punctuation),
            (r".", Text),
        ],
    }

    def get_tokens_unprocessed(self, text, stack=("root",)):
        methods = method_names()
        selectors = None
        for index, token, value in super().get_tokens_unprocessed(text, stack):
            if token is Name or token is Name.Label:
                if _BLOCK.match(value):
                    token = Name.Constant
                elif token is Name:
                    if value in methods:
                        token = Name.Function
                    else:
                        if selectors is None:
                            selectors = selector_names()
                        if value in selectors:
                            token = Name.Tag
            yield index, token, value


class MechaReplLexer(MechaLexer):
    """The REPL's input: a recipe line, or a `:command` followed by recipe text."""

    name = "mechalang-repl"
    aliases = ["mecha-repl"]
    filenames = []

    tokens = {
        "root": [(r"\A(\s*)(:[A-Za-z_]+)", bygroups(Whitespace, Keyword.Pseudo))] + MechaLexer.tokens["root"],
    }


def highlight_terminal(text: str, *, lexer: RegexLexer | None = None) -> str:
    """`text` with ANSI colours (256-colour when the terminal says so)."""
    import os

    from pygments import highlight
    from pygments.formatters import Terminal256Formatter, TerminalFormatter

    formatter = Terminal256Formatter(style="monokai") if "256" in os.environ.get("TERM", "") else TerminalFormatter()
    return highlight(text, lexer or MechaLexer(), formatter)
