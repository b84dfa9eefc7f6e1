"""`mecha check FILE`: everything short of reading tensors; exit 1 with every diagnostic."""

from __future__ import annotations

import sys
from typing import Iterable

from .. import pipeline
from ..diagnostics import Diagnostic, codes, count_summary, error, render_json
from .output import USAGE_CODES, emit, fail, shown_path, sort_diagnostics, summary_line


def parse_sets(sets: Iterable[str]) -> tuple[dict[str, str], list[Diagnostic]]:
    """`--set NAME=VALUE` options as params (and a diagnostic for each malformed one)."""
    out: dict[str, str] = {}
    diags = []
    for s in sets:
        name, eq, value = s.partition("=")
        name = name.strip()
        if not eq or not name.isidentifier():
            diags.append(error(codes.BAD_SET, f"--set {s!r}: expected NAME=VALUE", None))
            continue
        if name in out:
            diags.append(error(codes.SET_TWICE, f"--set {name} is given twice", None))
        out[name] = value
    return out, diags


def load(file: str, sets: Iterable[str], models_dir: str | None, plugins: Iterable[str] = (),
         **options) -> pipeline.Program:
    """`pipeline.load` with `--set` options parsed (their problems join the diagnostics)."""
    params, diags = parse_sets(sets)
    program = pipeline.load(file, params=params, models_dir=models_dir, plugins=plugins, **options)
    program.diagnostics[:0] = diags
    return program


def check_command(file: str, *, sets: Iterable[str] = (), models_dir: str | None = None,
                  strict: bool = False, plugins: Iterable[str] = (), format: str = "text",
                  allow_unused: bool = False, verbose: bool = False, force: bool = False) -> int:
    program = load(file, sets, models_dir, plugins, allow_unused=allow_unused, force=force)
    planned = pipeline.check(program, strict=strict)
    diags = planned.diagnostics
    if format == "json":
        sys.stdout.write(render_json(sort_diagnostics(diags)) + "\n")
        return 0 if planned.ok else (2 if all(d.code in USAGE_CODES for d in diags if d.is_error) else 1)
    if not planned.ok:
        return fail(diags, program.sources, format, file)
    emit(diags, program.sources, format)
    print(summary_line(program, file, planned.total_keys)
          + (f"; {count_summary(diags)}" if diags else ""))
    for c in planned.coverage:
        print(f"  note: {c.describe()}")
    if verbose:
        for line in model_source_lines(program) + adapter_mapping_lines(program):
            print(line)
    return 0


def model_source_lines(program: pipeline.Program) -> list[str]:
    """For every model a recipe reads: what it is read from (a folder's layout, the weights file
    or variant chosen), as its source says."""
    lines = []
    for n in program.builder.file_nodes():
        src = n.load.header if n.op == "load" else None
        note = getattr(src, "note", "")
        if note:
            lines.append(f"model {shown_path(n.load.path)} ({n.arch.name}): {note}")
    return lines


def adapter_mapping_lines(program: pipeline.Program) -> list[str]:
    """For every adapter a recipe reads: each of its modules, its kind and rank, and the key (and
    rows of a fused key) it updates: the whole mapping `check -v` prints."""
    lines = []
    for n in program.builder.file_nodes():
        if n.op != "adapter":
            continue
        amap = n.load.adapter
        lines.append(f"adapter {shown_path(n.load.path)} ({amap.dialect}; {n.arch.name}):")
        for key, pieces in amap.targets:
            for p in pieces:
                rows = f" rows {p.rows[0]}:{p.rows[1]}" if p.rows else ""
                rank = f", rank {p.rank}" if p.rank else ""
                lines.append(f"  {p.module} ({p.kind}{rank}) -> {key}{rows}")
    return lines
