"""Telling an sd-mecha recipe from a mechalang one, cheaply (every `mecha check` asks)."""

from __future__ import annotations

import re


def is_sdmecha(text: str) -> bool:
    """Whether `text` is an sd-mecha recipe: its first line that is not blank (or only a comment)
    is a `version` header. (`version` is no mechalang keyword, so no mechalang file starts so.)"""
    return header_position(text) is not None or is_legacy(text)


# The first words of sd-mecha's pre-1.0 lines (releases 0.0.x, 2024: no `version` header; the very
# first weeks wrote `call` where later files write `merge`).
_LEGACY_HEADS = re.compile(r'(?:(?:model|merge|call|lora|parameter)\s+"|dict\s+[A-Za-z_][A-Za-z0-9_]*=)')


def is_legacy(text: str) -> bool:
    """Whether `text` is a pre-1.0 sd-mecha recipe: no `version` header, its first instruction one
    of those lines, and none of 1.x's `literal` lines or `model_config=`/`merge_space=` keywords
    (a 1.x recipe that lost its header is reported as such, not read as an old one)."""
    first = True
    for raw in text.lstrip("\ufeff").splitlines():
        line = _strip_comment(raw).strip()
        if not line:
            continue
        if first and not _LEGACY_HEADS.match(line):
            return False
        first = False
        if line.startswith("literal") or "model_config=" in line or "merge_space=" in line:
            return False
    return not first


def header_position(text: str) -> tuple[int, int, int] | None:
    """(line, first column, end column), 1-based and end exclusive, of the `version` header that
    makes `text` an sd-mecha recipe; None when it is not one."""
    for lineno, raw in enumerate(text.lstrip("\ufeff").splitlines(), 1):
        line = _strip_comment(raw).rstrip()
        if not line.strip():
            continue
        parts = line.split()
        if parts[0] != "version" or len(parts) != 2:
            return None
        start = len(line) - len(line.lstrip())
        return lineno, start + 1, len(line) + 1
    return None


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
