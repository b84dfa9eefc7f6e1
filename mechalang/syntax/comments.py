"""Finding `# ...` comments in recipe text (the printer keeps them; the parser skips them)."""

from __future__ import annotations

import re
from bisect import bisect_right

from . import ast


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
