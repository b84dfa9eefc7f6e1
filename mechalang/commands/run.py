"""`mecha run FILE`: check, then execute every export with a progress bar and a summary."""

from __future__ import annotations

import time
from typing import Iterable

from .. import pipeline
from ..units import format_bytes
from .check import load
from .output import USAGE_CODES, emit, fail, shown_path, summary_line, written_line


def run_command(file: str, *, sets: Iterable[str] = (), output: str | None = None,
                models_dir: str | None = None, device: str = "cpu", threads: int | None = None,
                precision: str = "fp32", overwrite: bool = False, strict: bool = False,
                dry_run: bool = False, check_finite: bool = False, hash_inputs: bool = False,
                plugins: Iterable[str] = (), format: str = "text", force: bool = False,
                text: str | None = None, display: str | None = None, allow_unused: bool = False,
                shard_size: str | None = None, from_file: str | None = None) -> int:
    t0 = time.perf_counter()
    if from_file is not None:  # the recipe stored in a merged model's metadata
        text, display, problems = stored_recipe_of(from_file)
        if text is None:
            return fail(problems, None, format)
        file = display
        emit(problems, None, format)
    if text is not None:
        program = pipeline.load(text=text, name=display or file, models_dir=models_dir,
                                plugins=plugins, force=force, allow_unused=allow_unused)
    else:
        program = load(file, sets, models_dir, plugins, force=force, allow_unused=allow_unused)
    planned = pipeline.plan(program, output=output, precision=precision, strict=strict,
                            hash_inputs=hash_inputs and not dry_run, shard_size=shard_size)
    if not planned.ok:
        return fail(planned.diagnostics, planned.sources, format, file)
    if dry_run:
        emit(planned.diagnostics, planned.sources, format)
        print(summary_line(program, file, planned.total_keys))
        for o in planned.plan.outputs:
            print(f"  would write {shown_path(o.path)}: {len(o.tensors)} tensors, {format_bytes(o.data_bytes)}")
        _notes(planned, "  ")
        return 0
    result = execute_with_progress(planned, device=device, threads=threads, overwrite=overwrite,
                                   check_finite=check_finite, format=format)
    if not result.ok:
        return 130 if result.interrupted else (2 if all(d.code in USAGE_CODES for d in result.diagnostics
                                                        if d.is_error) else 1)
    elapsed = time.perf_counter() - t0
    for o in planned.plan.outputs:
        print(written_line(o))
    peak = result.stats.peak_rss
    print(f"done in {elapsed:.1f} s" + (f", peak memory {format_bytes(peak)}" if peak else ""))
    _notes(planned, "  ")
    return 0


def stored_recipe_of(model_file: str) -> tuple[str | None, str, list]:
    """The recipe a merged model stores (its text, the name diagnostics give it), or None and why;
    a warning when another mechalang version stored it."""
    from .._version import __version__
    from ..diagnostics import codes, error, warning
    from .show import read_model_header, stored_recipe

    header, problem = read_model_header(model_file)
    if problem is not None:
        return None, model_file, [problem]
    recipe = stored_recipe(header.metadata)
    display = f"{model_file} (stored recipe)"
    if recipe is None:
        other = " (its `sd_merge_recipe` is another merger's: see `mecha show`)" if "sd_merge_recipe" in header.metadata else ""
        return None, display, [error(codes.NO_STORED_RECIPE, f"`{model_file}` has no mechalang recipe in its "
                                                             f"metadata{other}", None,
                                     help="only files written by `mecha run` or `mecha merge` store one; "
                                          f"`mecha show {model_file}` shows what it has")]
    problems = []
    if recipe.version and recipe.version != __version__:
        problems.append(warning(codes.STORED_BY_OTHER_VERSION, f"the recipe in `{model_file}` was stored by "
                                                               f"mechalang {recipe.version}; this is {__version__}",
                                None, help="methods may have changed between versions: compare the outputs"))
    return recipe.text, display, problems


def execute_with_progress(planned: pipeline.Planned, *, device: str = "cpu", threads: int | None = None,
                          overwrite: bool = False, check_finite: bool = False,
                          format: str = "text") -> pipeline.RunResult:
    """`pipeline.execute` with a progress bar on stderr; shows the diagnostics of a failed run."""
    from ..runtime.progress import make_progress

    emit([d for d in planned.diagnostics if not d.is_error], planned.sources, format)
    problems = pipeline.preflight(planned, overwrite=overwrite, threads=threads, device=device)
    if problems:  # before any progress bar: nothing was started
        emit(problems, planned.sources, format)
        return pipeline.RunResult(planned, planned.diagnostics + problems)
    with make_progress(planned.total_keys, planned.total_bytes, enabled=format == "text") as bar:
        result = pipeline.execute(planned, device=device, threads=threads, overwrite=overwrite,
                                  check_finite=check_finite, progress=bar.advance)
        bar.failed = not result.ok
    if not result.ok:
        emit([d for d in result.diagnostics if d.is_error], planned.sources, format)
    return result


def _notes(planned: pipeline.Planned, indent: str) -> None:
    for c in planned.coverage:
        print(f"{indent}note: {c.describe()}")

