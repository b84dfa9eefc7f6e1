"""The `mecha` command line: flags parsed by Typer, then one call into `mechalang.commands`, which
calls the pipeline.

This module must never import torch (directly or through what it imports at module level):
`mecha check`, `mecha fmt`, `mecha info` and the REPL stay fast. Commands that execute merges
import the runtime inside the pipeline's `execute`.
"""

from __future__ import annotations

import sys
from enum import Enum
from typing import List, Optional

import typer

app = typer.Typer(
    name="mecha",
    help="mechalang: typed recipes for merging neural-network checkpoints.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


class Format(str, Enum):
    text = "text"
    json = "json"


class Precision(str, Enum):
    fp32 = "fp32"
    fp64 = "fp64"


class QuickDtype(str, Enum):
    fp16 = "fp16"
    bf16 = "bf16"
    fp32 = "fp32"


FormatOpt = typer.Option(Format.text, "--format", help="Diagnostics as rustc-style text or as JSON.")
SetOpt = typer.Option(None, "--set", metavar="NAME=VALUE",
                      help="Give a `param` of the recipe a value (repeatable).")
# MECHA_MODELS_DIR (a list of folders) is read by mechalang.paths, after --models-dir.
ModelsDirOpt = typer.Option(None, "--models-dir",
                            help="Folder to find models in, after the recipe's own folder and before "
                                 "those on MECHA_MODELS_DIR.")
PluginOpt = typer.Option(None, "--plugin", metavar="FILE.py",
                         help="A Python file of merge methods to register first (repeatable).")
StrictOpt = typer.Option(False, "--strict", help="Keys missing from some inputs of a merge are errors.")
AllowUnusedOpt = typer.Option(False, "--allow-unused",
                              help="Leave out adapter tensors that update no key of the base (a warning, not an error).")


def _version(show: bool) -> None:
    if show:
        from ._version import __version__

        print(f"mecha {__version__}")
        raise typer.Exit(0)


@app.callback()
def _main(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit.")):
    """mechalang: typed recipes for merging neural-network checkpoints."""


@app.command()
def check(
    file: str = typer.Argument(..., help="The recipe to check."),
    set_: Optional[List[str]] = SetOpt,
    models_dir: Optional[str] = ModelsDirOpt,
    strict: bool = StrictOpt,
    plugin: Optional[List[str]] = PluginOpt,
    format: Format = FormatOpt,
    allow_unused: bool = AllowUnusedOpt,
    verbose: bool = typer.Option(False, "-v", "--verbose",
                                 help="Also list every adapter module and the key it updates."),
    force: bool = typer.Option(False, "--force", help="As `mecha run --force`: differing architectures or "
                                                      "layouts merge, each keeping its first input's keys."),
):
    """Check a recipe against the real files' headers, without reading any tensor."""
    from .commands.check import check_command

    raise typer.Exit(check_command(file, sets=set_ or [], models_dir=models_dir, strict=strict,
                                   plugins=plugin or [], format=format.value, allow_unused=allow_unused,
                                   verbose=verbose, force=force))


@app.command()
def run(
    file: Optional[str] = typer.Argument(None, help="The recipe to run (or --from MODEL)."),
    from_: Optional[str] = typer.Option(None, "--from", metavar="MODEL",
                                        help="Re-run the recipe stored in a model that mecha wrote (its "
                                             "output goes where -o says, else where the recipe says, from "
                                             "the working folder)."),
    force: bool = typer.Option(False, "--force", help="Merge differing architectures or layouts: each merge "
                                                      "keeps every key of its first input, taken from it "
                                                      "where the others lack the key or have another shape."),
    set_: Optional[List[str]] = SetOpt,
    output: Optional[str] = typer.Option(None, "-o", "--output",
                                         help="Write the output here (a recipe with one export)."),
    models_dir: Optional[str] = ModelsDirOpt,
    device: str = typer.Option("cpu", "--device", help="Where arithmetic runs: cpu, cuda or cuda:N."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="Worker threads (default: the cores)."),
    precision: Precision = typer.Option(Precision.fp32, "--precision", help="The dtype arithmetic runs in."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing output files."),
    strict: bool = StrictOpt,
    dry_run: bool = typer.Option(False, "--dry-run", help="Check and plan; write nothing."),
    check_finite: bool = typer.Option(False, "--check-finite", help="Fail on NaN/inf outputs, naming the keys."),
    hash_: bool = typer.Option(False, "--hash", help="Record the inputs' sha256 in the output's metadata."),
    shard_size: Optional[str] = typer.Option(None, "--shard-size",
                                             help="Largest shard of `as hf` folder outputs (e.g. 5GB, 500MiB; default 5GB)."),
    plugin: Optional[List[str]] = PluginOpt,
    format: Format = FormatOpt,
    allow_unused: bool = AllowUnusedOpt,
):
    """Check, then execute every export with a progress bar and a summary."""
    from .commands.run import run_command

    if (file is None) == (from_ is None):
        raise typer.BadParameter("give a recipe FILE, or --from MODEL (not both)", param_hint="'FILE'")
    raise typer.Exit(run_command(file or "", from_file=from_, force=force, sets=set_ or [], output=output, models_dir=models_dir,
                                 device=device, threads=threads, precision=precision.value,
                                 overwrite=overwrite, strict=strict, dry_run=dry_run,
                                 check_finite=check_finite, hash_inputs=hash_, plugins=plugin or [],
                                 format=format.value, allow_unused=allow_unused, shard_size=shard_size))


@app.command()
def plan(
    file: str = typer.Argument(..., help="The recipe to plan."),
    set_: Optional[List[str]] = SetOpt,
    key: Optional[str] = typer.Option(None, "--key", help="Only keys matching this glob."),
    models_dir: Optional[str] = ModelsDirOpt,
    plugin: Optional[List[str]] = PluginOpt,
    format: Format = FormatOpt,
    allow_unused: bool = AllowUnusedOpt,
):
    """Print the lowered per-key plan and the estimated peak memory."""
    from .commands.plan import plan_command

    raise typer.Exit(plan_command(file, sets=set_ or [], key=key, models_dir=models_dir,
                                  plugins=plugin or [], format=format.value, allow_unused=allow_unused))


@app.command()
def explain(
    file: str = typer.Argument(..., help="The recipe."),
    key: str = typer.Argument(..., help="A tensor key (or glob) of an output."),
    set_: Optional[List[str]] = SetOpt,
    models_dir: Optional[str] = ModelsDirOpt,
    plugin: Optional[List[str]] = PluginOpt,
    format: Format = FormatOpt,
    allow_unused: bool = AllowUnusedOpt,
):
    """For one key: the formula, each hyperparameter's value and the rule that set it."""
    from .commands.plan import explain_command

    raise typer.Exit(explain_command(file, key, sets=set_ or [], models_dir=models_dir,
                                     plugins=plugin or [], format=format.value, allow_unused=allow_unused))


@app.command("explain-code")
def explain_code(code: Optional[str] = typer.Argument(None, help="A diagnostic code, e.g. E0401 (none: list all).")):
    """What a diagnostic code means, at length."""
    from .commands.explain_code import explain_code_command

    raise typer.Exit(explain_code_command(code))


@app.command()
def info(
    arch: Optional[str] = typer.Argument(None, help="An architecture to describe, or a model file or folder."),
    verbose: bool = typer.Option(False, "-v", "--verbose", help="List keys too."),
    methods: bool = typer.Option(False, "--methods", help="List merge methods."),
    kinds: bool = typer.Option(False, "--kinds", help="List adapter kinds (LoRA, LoHa, LoKr, ...) and their formulas."),
    plugin: Optional[List[str]] = PluginOpt,
):
    """Architectures, an architecture's components/blocks/classes, the merge methods or the adapter kinds;
    or a model (any source: safetensors, .ckpt/.pt/.bin, Hugging Face folder): kind, arch, size, keys."""
    from .commands.info import info_command

    raise typer.Exit(info_command(arch, verbose=verbose, methods=methods, plugins=plugin or [], kinds=kinds))


@app.command()
def fmt(
    files: List[str] = typer.Argument(..., help="Recipes to format in place."),
    check_: bool = typer.Option(False, "--check", help="Exit 1 if a file is not formatted."),
    diff: bool = typer.Option(False, "--diff", help="Print a diff instead of writing."),
    color: bool = typer.Option(False, "--color", help="Print the formatted files, syntax-highlighted, instead of "
                                                      "writing."),
    format: Format = FormatOpt,
):
    """Canonical formatting (parse, then print)."""
    from .commands.fmt import fmt_command

    raise typer.Exit(fmt_command(files, check=check_, diff=diff, format=format.value, color=color))


@app.command()
def convert(file: str = typer.Argument(..., help="An sd-mecha `version 0.1.0` recipe.")):
    """Print an sd-mecha recipe as mechalang."""
    from .commands.convert import convert_command

    raise typer.Exit(convert_command(file))


@app.command()
def merge(
    models: Optional[List[str]] = typer.Argument(None, help="Two models (three for add_difference); or a model "
                                                            "and LoRAs to bake; or two LoRAs to merge into one "
                                                            "(none, in a terminal: the `mecha tui` form)."),
    method: str = typer.Option("weighted_sum", "--method",
                               help="weighted_sum, sigmoid, inv_sigmoid or add_difference."),
    alpha: float = typer.Option(0.5, "--alpha", help="The weight of the second model: 0 = all A, 1 = all B, "
                                                     "0.3 = 70% A + 30% B (weighted_sum; sigmoid and inv_sigmoid "
                                                     "ease it by a curve with the same ends). add_difference: "
                                                     "A + alpha·(B − C): 1 adds the whole difference, 0 gives A."),
    force: bool = typer.Option(False, "--force", help="Merge differing architectures or layouts: every key of "
                                                      "the first model is kept, taken from it where the others "
                                                      "lack the key or have another shape (counted in the "
                                                      "summary)."),
    lora: Optional[float] = typer.Option(None, "--lora",
                                         help="Bake the LoRAs given after the model at this strength "
                                              "(default 1; LoRAs are recognised from their tensors)."),
    name: Optional[str] = typer.Option(None, "--name", help="Output name (letters, digits, .+-; default: the "
                                                            "inputs' names, the method and alpha)."),
    output: Optional[str] = typer.Option(None, "-o", "--output",
                                         help="The output file, or a folder to write it in (default: the "
                                              "models folder, else the working folder)."),
    hash_: bool = typer.Option(False, "--hash", help="Record the inputs' sha256 in the output's metadata."),
    arch: Optional[str] = typer.Option(None, "--arch", help="Read every model as this architecture "
                                                            "(default: detected from each file)."),
    models_dir: Optional[str] = ModelsDirOpt,
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output file."),
    print_recipe: bool = typer.Option(False, "--print-recipe", help="Print the recipe and exit."),
    device: str = typer.Option("cpu", "--device", help="Where arithmetic runs: cpu, cuda or cuda:N."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="Worker threads (default: the cores)."),
    dtype: Optional[QuickDtype] = typer.Option(None, "--dtype", help="Output dtype (default: the first model's)."),
    format: Format = FormatOpt,
):
    """The quick two-or-three-model merge of GUI mergers, as one command."""
    if not models:  # in a terminal: the form; else the usage error it always was
        if sys.stdin.isatty() and sys.stdout.isatty():
            from .tui import run_tui

            raise typer.Exit(run_tui(models_dir))
        raise typer.BadParameter("missing: give two models (three for add_difference), or run `mecha tui` "
                                 "in a terminal", param_hint="'MODELS...'")
    from .commands.merge import merge_command

    raise typer.Exit(merge_command(models, method=method, alpha=alpha, force=force, name=name,
                                   models_dir=models_dir, overwrite=overwrite,
                                   print_recipe=print_recipe, device=device, threads=threads,
                                   dtype=dtype.value if dtype else None, format=format.value, lora=lora,
                                   output=output, hash_inputs=hash_, arch=arch))


@app.command()
def show(file: str = typer.Argument(..., help="A model file."), format: Format = FormatOpt):
    """A model's header summary and provenance: the recipe mecha stored, inputs, A1111 and modelspec fields."""
    from .commands.show import show_command

    raise typer.Exit(show_command(file, format=format.value))


@app.command()
def repl(models_dir: Optional[str] = ModelsDirOpt, plugin: Optional[List[str]] = PluginOpt):
    """Interactive: build values, :type, :keys, :explain, :plan, :run."""
    from .repl import run_repl

    raise typer.Exit(run_repl(models_dir, plugins=plugin or []))


@app.command()
def tui(models_dir: Optional[str] = ModelsDirOpt):
    """The merge form in the terminal: models, method, alpha, block weights; checks as you type, then runs."""
    from .tui import run_tui

    raise typer.Exit(run_tui(models_dir))


@app.command()
def ui(
    models_dir: Optional[str] = ModelsDirOpt,
    output_dir: Optional[str] = typer.Option(None, "--output-dir",
                                             help="Where merges are written (default: the models folder, "
                                                  "so outputs are listed with the models)."),
    port: int = typer.Option(0, "--port", min=0, max=65535, help="The port (default: a free one)."),
    host: str = typer.Option("127.0.0.1", "--host", help="The address to listen on (default: this machine only)."),
    no_browser: bool = typer.Option(False, "--no-browser", help="Print the URL; do not open a browser."),
):
    """The merge page in the browser: quick merge, block weights, a recipe editor, runs with progress."""
    from .ui import run_ui

    raise typer.Exit(run_ui(models_dir, output_dir, host=host, port=port, open_browser=not no_browser))


def main() -> None:
    import os

    try:
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
    except SystemExit as done:
        _exit(done.code)


def _exit(code) -> None:
    """End the process with `code` (SystemExit's: None, a number or a message).

    Once torch is loaded, tearing the interpreter down (freeing every module's objects one by
    one) takes 0.4–0.5 s on a 2-core machine, as long as a small merge's computation. So, when
    nothing else is still running, the exit handlers run and the output streams are flushed as
    Python's shutdown would, and the process ends at once. Everything mecha writes is complete
    and closed (or removed) before a command returns."""
    import atexit
    import os
    import threading

    # a profiler or a coverage tracer reports after the command returns: let it
    observed = sys.getprofile() is not None or sys.gettrace() is not None
    if observed or "torch" not in sys.modules or any(
            t is not threading.main_thread() and not t.daemon and t.is_alive() for t in threading.enumerate()):
        sys.exit(code)
    if code is None:
        status = 0
    elif isinstance(code, int):
        status = code
    else:
        sys.stderr.write(f"{code}\n")
        status = 1
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(status & 0xFF)


if __name__ == "__main__":
    main()
