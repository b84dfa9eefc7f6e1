"""Telling an sd-mecha recipe from a mechalang one, cheaply (every `mecha check` asks)."""

from __future__ import annotations


def is_sdmecha(text: str) -> bool:
    """Whether `text` is an sd-mecha recipe: its first line that is not blank (or only a comment)
    is a `version` header. (`version` is no mechalang keyword, so no mechalang file starts so.)"""
    for raw in text.lstrip("\ufeff").splitlines():
        line = _strip_comment(raw).strip()
        if not line:
            continue
        parts = line.split()
        return parts[0] == "version" and len(parts) == 2
    return False


def _strip_comment(line: str) -> str:
    """The line without a `#` comment (a `#` inside a quoted string is kept)."""
    inside = escaped = False
    for i, c in enumerate(line):
        if escaped:
            escaped = False
        elif c == "\\":
            escaped = True
        elif c == '"':
            inside = not inside
        elif c == "#" and not inside:
            return line[:i]
    return line
