"""Canonical formatting of recipe text: parse, print, and prove the result means the same.

The new text is parsed again and compared with the old tree and comments before anyone trusts it,
so a printer bug can never change a program or drop a comment. Line endings are kept (`\\r\\n`
stays `\\r\\n`). `mecha fmt` (commands/fmt.py) writes the result back to files.
"""

from __future__ import annotations

from collections import Counter

from ..diagnostics import Diagnostic, codes, error
from .parser import parse
from .printer import print_module


def format_text(text: str, file: str = "<text>") -> tuple[str | None, list[Diagnostic]]:
    """The canonical form of recipe `text` (same line endings), or diagnostics."""
    module, diags = parse(text, file)
    if module is None:
        return None, diags
    new = print_module(module)
    # The printer must keep the program and every comment; check before anyone trusts the result.
    again, again_diags = parse(new, file)
    if (again is None or again != module
            or Counter(c.text for c in again.comments) != Counter(c.text for c in module.comments)):
        why = "; ".join(d.message for d in again_diags) or "the program or its comments changed"
        return None, [error(codes.FMT_UNSAFE, f"`mecha fmt` could not format `{file}` safely ({why}); "
                                     "the file is left unchanged",
                            help="this is a bug in mechalang; please report it with the file")]
    if "\r\n" in text:
        new = new.replace("\n", "\r\n")
    return new, []
