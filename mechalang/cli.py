"""The `mecha` command line. Each command is a thin shell over a function in its own module.

This module must never import torch (directly or through what it imports at module level):
`mecha check`, `mecha fmt`, `mecha info` and the REPL stay fast. Commands that execute merges
import the runtime inside their function body.
"""

from __future__ import annotations

import sys
from typing import List, Optional

import typer

app = typer.Typer(
    name="mecha",
    help="mechalang: typed recipes for merging neural-network checkpoints.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

FormatOpt = typer.Option("text", "--format", help="Diagnostics as `text` or `json`.")
SetOpt = typer.Option(None, "--set", help="Set a param: NAME=VALUE (repeatable).")
ModelsDirOpt = typer.Option(None, "--models-dir", envvar="MECHA_MODELS_DIR",
                            help="Folder to find models in (after the recipe's own folder).")


@app.command()
def check(
    file: str = typer.Argument(..., help="The recipe to check."),
    set_: Optional[List[str]] = SetOpt,
    models_dir: Optional[str] = ModelsDirOpt,
    strict: bool = typer.Option(False, "--strict", help="Keys missing from some inputs are errors."),
    format: str = FormatOpt,
):
    """Check a recipe against the real files' headers, without reading any tensor."""
    from .commands import check_command

    raise typer.Exit(check_command(file, set_ or [], models_dir, strict, format))


@app.command()
def run(
    file: str = typer.Argument(..., help="The recipe to run."),
    set_: Optional[List[str]] = SetOpt,
    output: Optional[str] = typer.Option(None, "-o", "--output", help="Output path (one export only)."),
    models_dir: Optional[str] = ModelsDirOpt,
    device: str = typer.Option("cpu", "--device", help="cpu, cuda or cuda:N."),
    threads: Optional[int] = typer.Option(None, "--threads", help="Worker threads (default: cores)."),
    precision: str = typer.Option("fp32", "--precision", help="Arithmetic precision: fp32 or fp64."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing output files."),
    strict: bool = typer.Option(False, "--strict", help="Keys missing from some inputs are errors."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Check and plan, write nothing."),
    check_finite: bool = typer.Option(False, "--check-finite", help="Fail on NaN/inf outputs, by key."),
    hash_: bool = typer.Option(False, "--hash", help="Record sha256 of inputs in the metadata."),
    plugin: Optional[List[str]] = typer.Option(None, "--plugin", help="Python file with merge methods."),
    format: str = FormatOpt,
):
    """Check, then execute every export with a progress bar and a summary."""
    from .commands import run_command

    raise typer.Exit(run_command(file, set_=set_ or [], output=output, models_dir=models_dir,
                                 device=device, threads=threads, precision=precision,
                                 overwrite=overwrite, strict=strict, dry_run=dry_run,
                                 check_finite=check_finite, hash_inputs=hash_, plugins=plugin or [],
                                 format=format))


@app.command()
def plan(
    file: str = typer.Argument(...),
    set_: Optional[List[str]] = SetOpt,
    key: Optional[str] = typer.Option(None, "--key", help="Only keys matching this glob."),
    models_dir: Optional[str] = ModelsDirOpt,
    format: str = FormatOpt,
):
    """Print the lowered per-key plan and the estimated peak memory."""
    from .commands import plan_command

    raise typer.Exit(plan_command(file, set_ or [], key, models_dir, format))


@app.command()
def explain(
    file: str = typer.Argument(...),
    key: str = typer.Argument(..., help="A tensor key (or glob) of an output."),
    set_: Optional[List[str]] = SetOpt,
    models_dir: Optional[str] = ModelsDirOpt,
    format: str = FormatOpt,
):
    """For one key: the formula, each hyperparameter's value and the rule that set it."""
    from .commands import explain_command

    raise typer.Exit(explain_command(file, key, set_ or [], models_dir, format))


@app.command()
def info(
    arch: Optional[str] = typer.Argument(None, help="An architecture to describe."),
    verbose: bool = typer.Option(False, "-v", "--verbose", help="List keys too."),
    methods: bool = typer.Option(False, "--methods", help="List merge methods."),
    plugin: Optional[List[str]] = typer.Option(None, "--plugin", help="Python file with merge methods."),
):
    """Architectures, an architecture's components/blocks/classes, or the merge methods."""
    from .commands import info_command

    raise typer.Exit(info_command(arch, verbose, methods, plugin or []))


@app.command()
def fmt(
    files: List[str] = typer.Argument(..., help="Recipes to format in place."),
    check_: bool = typer.Option(False, "--check", help="Exit 1 if a file is not formatted."),
    diff: bool = typer.Option(False, "--diff", help="Print a diff instead of writing."),
    format: str = FormatOpt,
):
    """Canonical formatting (parse, then print)."""
    from .syntax.fmt import fmt_command

    raise typer.Exit(fmt_command(files, check=check_, diff=diff, format=format))


@app.command()
def convert(file: str = typer.Argument(..., help="An sd-mecha `version 0.1.0` recipe.")):
    """Print an sd-mecha recipe as mechalang."""
    from .syntax.sdmecha import convert_command

    raise typer.Exit(convert_command(file))


@app.command()
def merge(
    models: List[str] = typer.Argument(..., help="Two models (three for add_difference)."),
    method: str = typer.Option("weighted_sum", "--method",
                               help="weighted_sum, sigmoid, inv_sigmoid or add_difference."),
    alpha: float = typer.Option(0.5, "--alpha"),
    force: bool = typer.Option(False, "--force", help="Merge differing architectures over shared keys."),
    name: Optional[str] = typer.Option(None, "--name", help="Output name (letters, digits, .+-)."),
    models_dir: Optional[str] = ModelsDirOpt,
    overwrite: bool = typer.Option(False, "--overwrite"),
    print_recipe: bool = typer.Option(False, "--print-recipe", help="Print the recipe and exit."),
    device: str = typer.Option("cpu", "--device"),
    threads: Optional[int] = typer.Option(None, "--threads"),
    dtype: Optional[str] = typer.Option(None, "--dtype", help="Output dtype: fp16, bf16, fp32."),
):
    """The quick two-or-three-model merge of GUI mergers, as one command."""
    from .commands import merge_command

    raise typer.Exit(merge_command(models, method=method, alpha=alpha, force=force, name=name,
                                   models_dir=models_dir, overwrite=overwrite,
                                   print_recipe=print_recipe, device=device, threads=threads,
                                   dtype=dtype))


@app.command()
def repl(models_dir: Optional[str] = ModelsDirOpt):
    """Interactive: build values, :type, :keys, :explain, :plan, :run."""
    from .repl import run_repl

    raise typer.Exit(run_repl(models_dir))


def main() -> None:
    import os

    try:
        app()
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        sys.exit(130)
    except Exception as exc:  # a bug of ours: say so plainly, without a traceback wall
        if os.environ.get("MECHA_DEBUG"):
            raise
        sys.stderr.write(f"internal error: {type(exc).__name__}: {exc}\n"
                         "this is a bug in mecha; run again with MECHA_DEBUG=1 for the traceback\n")
        sys.exit(70)


if __name__ == "__main__":
    main()
