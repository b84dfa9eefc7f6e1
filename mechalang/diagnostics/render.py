"""Rendering diagnostics: rustc-style text with carets under the source, or JSON."""

from __future__ import annotations

import json
from typing import Iterable, Mapping

from .core import Diagnostic


class SourceMap:
    """The text of every file a diagnostic may point into, by the name used in spans."""

    def __init__(self) -> None:
        self._texts: dict[str, list[str]] = {}

    def add(self, name: str, text: str) -> None:
        self._texts[name] = text.splitlines()

    def line(self, name: str, line: int) -> str | None:
        lines = self._texts.get(name)
        if lines is None or not 1 <= line <= len(lines):
            return None
        return lines[line - 1]


def _caret_line(text: str, col: int, end_col: int, char: str) -> str:
    # Columns count characters; tabs are expanded to keep carets under the right text.
    prefix = text[: col - 1]
    pad = "".join("\t" if c == "\t" else " " for c in prefix)
    width = max(1, end_col - col)
    return pad + char * width


def render_text(diagnostics: Iterable[Diagnostic], sources: SourceMap | Mapping[str, str] | None = None) -> str:
    if sources is None:
        sources = SourceMap()
    elif not isinstance(sources, SourceMap):
        sm = SourceMap()
        for k, v in sources.items():
            sm.add(k, v)
        sources = sm
    return "\n".join(render_one(d, sources) for d in diagnostics)


def render_one(d: Diagnostic, sources: SourceMap) -> str:
    """rustc-style: a header line, then each file's labelled lines in line order, carets under
    the spans (`^` for the primary, `-` for secondary labels), then notes and help."""
    out = [f"{d.severity.value}[{d.code}]: {d.message}"]
    labels = ([(d.span, d.label, "^")] if d.span else []) + [(l.span, l.message, "-") for l in d.secondary]
    gutter = max((len(str(s.line)) for s, _, _ in labels), default=1)
    pad = " " * gutter
    files: list[str] = []
    for s, _, _ in labels:
        if s.file not in files:
            files.append(s.file)
    for fi, file in enumerate(files):
        in_file = sorted((l for l in labels if l[0].file == file), key=lambda l: (l[0].line, l[0].col))
        anchor = d.span if d.span is not None and d.span.file == file else in_file[0][0]
        out.append(f"{pad}{'-->' if fi == 0 else ':::'} {file}:{anchor.line}:{anchor.col}")
        out.append(f"{pad} |")
        last_line = None
        for span, msg, char in in_file:
            text = sources.line(span.file, span.line)
            if text is None:
                if msg:
                    out.append(f"{pad} = {msg}")
                continue
            if span.line != last_line:
                if last_line is not None and span.line > last_line + 1:
                    out.append(f"{pad}...")
                out.append(f"{str(span.line).rjust(gutter)} | {text}")
                last_line = span.line
            end_col = span.end_col if span.end_line == span.line else len(text) + 1
            carets = _caret_line(text, span.col, end_col, char)
            out.append(f"{pad} | {carets}{(' ' + msg) if msg else ''}".rstrip())
    if labels:
        out.append(f"{pad} |")
    for note in d.notes:
        out.append(f"{pad} = note: {note}")
    if d.help:
        out.append(f"{pad} = help: {d.help}")
    return "\n".join(out) + "\n"


def render_json(diagnostics: Iterable[Diagnostic]) -> str:
    return json.dumps([d.to_json() for d in diagnostics], indent=2)


