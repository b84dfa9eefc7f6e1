"""`mecha convert FILE`: an sd-mecha `version 0.1.0` recipe printed as mechalang."""

from __future__ import annotations

import sys

from ..compat.sdmecha import convert_text
from ..syntax.source import read_source
from .output import fail


def convert_command(path: str, *, format: str = "text") -> int:
    text, diags = read_source(path)
    sources = {path: text} if text is not None else {}
    if text is None:
        return fail(diags, None, format)
    out, diags = convert_text(text, path)
    if out is None or any(d.is_error for d in diags):
        return fail(diags, _sourcemap(sources), format)
    if diags:
        from .output import emit

        emit(diags, _sourcemap(sources), format)
    sys.stdout.write(out)
    return 0


def _sourcemap(sources: dict[str, str]):
    from ..diagnostics import SourceMap

    sm = SourceMap()
    for k, v in sources.items():
        sm.add(k, v)
    return sm
