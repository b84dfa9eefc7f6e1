"""How commands show diagnostics and summaries: rustc-style text on stderr, or JSON."""

from __future__ import annotations

import sys
from typing import Iterable, TextIO

from ..diagnostics import Diagnostic, SourceMap, codes, count_summary, render_json, render_text
from ..graph.program import Program
from ..paths import shown_path  # noqa: F401 (re-exported for the commands)

FORMATS = ("text", "json")

# Problems with the command line itself (exit code 2, as for a flag Typer rejects).
USAGE_CODES = frozenset(c.id for c in (codes.BAD_SET, codes.SET_TWICE, codes.INVALID_OPTION,
                                       codes.UNKNOWN_QUICK_METHOD, codes.QUICK_MERGE_MODEL_COUNT,
                                       codes.BAD_OUTPUT_NAME, codes.ADAPTER_MISPLACED))


def sort_diagnostics(diags: Iterable[Diagnostic]) -> list[Diagnostic]:
    """Errors first, then by file, line and column."""
    def key(d: Diagnostic):
        s = d.span
        return (0 if d.is_error else 1, s.file if s else "", s.line if s else 0, s.col if s else 0)

    return sorted(diags, key=key)


def emit(diags: list[Diagnostic], sources: SourceMap | None, format: str,
         stream: TextIO | None = None) -> None:
    """Show diagnostics (nothing when there are none)."""
    if not diags:
        return
    stream = stream or sys.stderr
    if format == "json":
        stream.write(render_json(sort_diagnostics(diags)) + "\n")
    else:
        stream.write(render_text(sort_diagnostics(diags), sources))


def fail(diags: list[Diagnostic], sources: SourceMap | None, format: str, what: str | None = None) -> int:
    """Show diagnostics and a one-line count (text only); the exit code: 2 when every error is
    about the command line itself, else 1."""
    emit(diags, sources, format)
    if what and format == "text":
        sys.stderr.write(f"{what}: {count_summary(diags)}\n")
    errors = [d for d in diags if d.is_error]
    return 2 if errors and all(d.code in USAGE_CODES for d in errors) else 1


def summary_line(program: Program, file: str, keys: int) -> str:
    exports = [e for e in program.exports if e.node is not None]
    loads: dict[str, tuple[str, str]] = {}
    for e in exports:
        for n in e.node.walk():
            if n.load is not None:
                loads[n.load.path] = (n.arch.name, n.op)
    archs = sorted({a for a, _ in loads.values()})
    models = sum(1 for _, op in loads.values() if op != "adapter")
    adapters = len(loads) - models
    inputs = f"{models} model{'s' if models != 1 else ''}"
    if adapters:
        inputs += f" and {adapters} adapter{'s' if adapters != 1 else ''}"
    return (f"ok: {file}: {len(exports)} export{'s' if len(exports) != 1 else ''}, "
            f"{inputs} ({', '.join(archs) or 'none'}), {keys} output keys")


def written_line(out) -> str:
    """`wrote PATH: N tensors, SIZE` for a finished output. A LoRA with dynamic ranks was trimmed
    after it was planned: its tensors' bytes are the file's, less its header."""
    from ..units import format_bytes

    size = out.data_bytes
    if out.trim_lora:
        from ..archs.header import read_header

        h = read_header(out.path)
        size = h.size - h.data_start
    return f"wrote {shown_path(out.path)}: {len(out.tensors)} tensors, {format_bytes(size)}"
