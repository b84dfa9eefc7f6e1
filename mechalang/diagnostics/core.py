"""The one diagnostic type of mechalang: a code from the registry (`codes.py`), a severity, a
message, a primary span, labelled secondary spans, notes and help.

Every pass reports problems as `Diagnostic` values and keeps going; exceptions are used only at
the edges (`DiagnosticError` carries a batch of diagnostics out of a pass that cannot continue).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Iterable

from .codes import Code


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


def _code_id(code: Code) -> str:
    if not isinstance(code, Code):  # codes come from the registry, never as ad-hoc strings
        raise TypeError(f"a diagnostic code must be a registered Code, not {code!r}")
    return code.id


def error(code: Code, message: str, span: Span | None = None, *, label: str = "",
          help: str | None = None, secondary: Iterable[Label] = (), notes: Iterable[str] = ()) -> Diagnostic:
    return Diagnostic(_code_id(code), message, span, Severity.ERROR, label, tuple(secondary), help, tuple(notes))


def warning(code: Code, message: str, span: Span | None = None, *, label: str = "",
            help: str | None = None, secondary: Iterable[Label] = (), notes: Iterable[str] = ()) -> Diagnostic:
    return Diagnostic(_code_id(code), message, span, Severity.WARNING, label, tuple(secondary), help, tuple(notes))


class DiagnosticError(Exception):
    """Carries diagnostics out of a pass that cannot go on (a file that cannot be read, say)."""

    def __init__(self, diagnostics: Diagnostic | Iterable[Diagnostic]):
        if isinstance(diagnostics, Diagnostic):
            diagnostics = [diagnostics]
        self.diagnostics = list(diagnostics)
        super().__init__("; ".join(d.message for d in self.diagnostics))


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

