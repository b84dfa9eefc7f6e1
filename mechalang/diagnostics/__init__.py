"""Diagnostics: the one error type (`core`), the registry of codes (`codes`), the long explanation
of each code (`explanations`), and the renderers (`render`)."""

from . import codes
from .codes import Code
from .core import Diagnostic, DiagnosticError, Label, Severity, Span, count_summary, did_you_mean, error, warning
from .render import SourceMap, render_json, render_one, render_text

__all__ = ["Code", "Diagnostic", "DiagnosticError", "Label", "Severity", "SourceMap", "Span", "codes",
           "count_summary", "did_you_mean", "error", "render_json", "render_one", "render_text",
           "warning"]
