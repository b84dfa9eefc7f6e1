"""The one diagnostic type of mechalang, and its two renderers (rustc-style text and JSON).

Every pass reports problems as `Diagnostic` values and keeps going; exceptions are used only at
the edges (`DiagnosticError` carries a batch of diagnostics out of a pass that cannot continue).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import Enum
from typing import Iterable, Mapping


class Severity(str, Enum):
    ERROR = "error"
    WARNING = "warning"
    NOTE = "note"


@dataclass(frozen=True)
class Span:
    """A region of one source file. Lines and columns are 1-based; `end_col` is exclusive."""

    file: str
    line: int
    col: int
    end_line: int
    end_col: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"

    @staticmethod
    def point(file: str, line: int, col: int) -> "Span":
        return Span(file, line, col, line, col + 1)

    def to(self, other: "Span | None") -> "Span":
        """The span covering `self` through `other` (same file)."""
        if other is None or other.file != self.file:
            return self
        return Span(self.file, self.line, self.col, other.end_line, other.end_col)


@dataclass(frozen=True)
class Label:
    span: Span
    message: str = ""


@dataclass(frozen=True)
class Diagnostic:
    code: str
    message: str
    span: Span | None = None
    severity: Severity = Severity.ERROR
    label: str = ""
    secondary: tuple[Label, ...] = ()
    help: str | None = None
    notes: tuple[str, ...] = ()

    @property
    def is_error(self) -> bool:
        return self.severity == Severity.ERROR

    def with_secondary(self, *labels: Label) -> "Diagnostic":
        return Diagnostic(self.code, self.message, self.span, self.severity, self.label,
                          self.secondary + tuple(labels), self.help, self.notes)

    def to_json(self) -> dict:
        def span_json(s: Span | None):
            if s is None:
                return None
            return {"file": s.file, "line": s.line, "col": s.col,
                    "end_line": s.end_line, "end_col": s.end_col}

        return {
            "code": self.code,
            "severity": self.severity.value,
            "message": self.message,
            "span": span_json(self.span),
            "label": self.label,
            "secondary": [{"span": span_json(l.span), "message": l.message} for l in self.secondary],
            "help": self.help,
            "notes": list(self.notes),
        }


def error(code: str, message: str, span: Span | None = None, *, label: str = "",
          help: str | None = None, secondary: Iterable[Label] = (), notes: Iterable[str] = ()) -> Diagnostic:
    return Diagnostic(code, message, span, Severity.ERROR, label, tuple(secondary), help, tuple(notes))


def warning(code: str, message: str, span: Span | None = None, *, label: str = "",
            help: str | None = None, secondary: Iterable[Label] = (), notes: Iterable[str] = ()) -> Diagnostic:
    return Diagnostic(code, message, span, Severity.WARNING, label, tuple(secondary), help, tuple(notes))


class DiagnosticError(Exception):
    """Carries diagnostics out of a pass that cannot go on (a file that cannot be read, say)."""

    def __init__(self, diagnostics: Diagnostic | Iterable[Diagnostic]):
        if isinstance(diagnostics, Diagnostic):
            diagnostics = [diagnostics]
        self.diagnostics = list(diagnostics)
        super().__init__("; ".join(d.message for d in self.diagnostics))


# --------------------------------------------------------------------------------------------
# Rendering


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


def count_summary(diagnostics: Iterable[Diagnostic]) -> str:
    ds = list(diagnostics)
    errors = sum(1 for d in ds if d.severity == Severity.ERROR)
    warnings = sum(1 for d in ds if d.severity == Severity.WARNING)
    parts = []
    if errors:
        parts.append(f"{errors} error{'s' if errors != 1 else ''}")
    if warnings:
        parts.append(f"{warnings} warning{'s' if warnings != 1 else ''}")
    return ", ".join(parts) if parts else "no problems"


def did_you_mean(name: str, candidates: Iterable[str]) -> str | None:
    """The closest candidate to a misspelled name, or None when nothing is close."""
    import difflib

    cands = list(dict.fromkeys(candidates))
    lowered = {c.lower(): c for c in cands}
    if name.lower() in lowered:
        return lowered[name.lower()]
    best = difflib.get_close_matches(name, cands, n=1, cutoff=0.6)
    return best[0] if best else None

