"""load → plan → run: the one way into mechalang, with typed options and diagnostics as values.

    program = pipeline.load("recipe.mecha", params={"alpha": 0.7}, models_dir="models")
    planned = pipeline.plan(program, precision="fp32")
    result = pipeline.execute(planned, threads=4, progress=on_progress)   # or pipeline.run(program)

Every front end (the CLI, the REPL, the Python API, the terminal form, the web page) calls these
and nothing below them, so a capability added here appears in all of them. None of these raises
for a problem with the user's input: each returns a value whose `diagnostics` say what is wrong
and whose `ok` says whether it can go on. Torch is imported only by `execute`/`run`.
"""

from __future__ import annotations

import os
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping

from .deep import call_deep
from .diagnostics import Diagnostic, SourceMap, codes, error, warning
from .graph.program import Export, Program
from .paths import models_dirs as _models_dirs
from .paths import shown_path

if TYPE_CHECKING:
    from .graph.coverage import Analysis, Coverage
    from .graph.lower import Lowered
    from .runtime.executor import RunStats
    from .runtime.plan import Plan

PRECISIONS = ("fp32", "fp64")
Progress = Callable[[int, int], None]  # progress(tensors, nbytes): increments, as they are written

__all__ = ["PRECISIONS", "Checked", "Export", "Planned", "Program", "RunResult", "check", "execute", "load", "plan",
           "preflight", "run", "scalar_text"]


# ------------------------------------------------------------------------------------------------
# load: parse, resolve, check, build


def load(source: str | os.PathLike | None = None, *, text: str | None = None, name: str | None = None,
         params: Mapping[str, Any] | None = None, models_dir: str | os.PathLike | Iterable | None = None,
         plugins: Iterable[str | os.PathLike] = (), force: bool = False, allow_unused: bool = False,
         base_dir: str | os.PathLike | None = None, expect_exports: bool = True,
         defer_missing_models: bool = False) -> Program:
    """Check a recipe, from a file (`source`) or from `text`, without reading any tensor.

    params: values for the recipe's `param`s, as `--set` gives them: strings are read by the
        param's declared type (`"0.7"`, `"model.safetensors"`, `"other.mecha"`); numbers and bools
        may be given as such.
    models_dir: a folder (or several) to find models in after the recipe's own folder, before
        `MECHA_MODELS_DIR`.
    plugins: Python files of merge methods to register first (a failure is a diagnostic).
    force: merge models of differing architectures or shapes over their common keys (`mecha merge
        --force`).
    allow_unused: adapter tensors that update no key of the base are left out with a warning,
        instead of an error (`--allow-unused`).
    name, base_dir: for `text`, the name diagnostics use (default `<recipe>`) and the folder that
        relative paths start from (default: the working folder).
    expect_exports: warn about a recipe without `export` (off for values built in the REPL or
        from Python).
    defer_missing_models: a model file that is not found is not an error yet (the Python API
        checks recipes before it is told the models folder); such a program cannot be planned.

    sd-mecha recipes (`version 0.1.0`) are read through the converter into the same program.
    """
    from .check.evaluate import Evaluator, Options
    from .compat.sdmecha import convert_text, is_sdmecha

    diags = load_plugins(plugins) + architecture_problems()
    values, more = _param_texts(params or {})
    diags += more
    ev = Evaluator(Options(models_dirs=_models_dirs(models_dir), sets=values, force=force,
                           allow_unused=allow_unused, expect_exports=expect_exports, defer_missing_models=defer_missing_models))
    if text is not None:
        display = name or "<recipe>"
        path = Path(base_dir or Path.cwd()) / Path(display).name  # a name, not a place: base_dir is
    else:
        if source is None:
            raise TypeError("load() needs a path or text=")
        display = name or os.fspath(source)
        path = Path(source)
        head = _head(path)
        if head is not None and is_sdmecha(head):
            raw = path.read_bytes().decode("utf-8", "replace")
            ev.sources.add(display, raw)
            text, converted = convert_text(raw, display)
            diags += converted
            if text is None:  # the sd-mecha reader said why: there is no program to check
                return Program(None, [], diags, ev.sources, {}, ev.builder, {})
            display = f"{display} (converted)"
        path = path.resolve() if path.exists() else path
    program = call_deep(ev.run_main, path, text=text, display=display if text is not None else None)
    program.diagnostics[:0] = diags
    return program


def _head(path: Path) -> str | None:
    try:
        with open(path, "rb") as f:
            return f.read(4096).decode("utf-8", "replace")
    except (OSError, ValueError):
        return None


def scalar_text(value: Any) -> str:
    """A Python value as `--set` would give it (`True` → `true`, `0.5` → `0.5`)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return os.fspath(value) if isinstance(value, os.PathLike) else str(value)


def _param_texts(params: Mapping[str, Any]) -> tuple[dict[str, str], list[Diagnostic]]:
    out: dict[str, str] = {}
    diags = []
    for k, v in params.items():
        if not isinstance(k, str) or not k.isidentifier():
            diags.append(error(codes.BAD_SET, f"param name {k!r} is not a name", None))
            continue
        out[k] = scalar_text(v)
    return out, diags


def architecture_problems() -> list[Diagnostic]:
    """Architecture files (on MECHA_PATH) that could not be loaded: a warning each (the file is
    left out; recipes that do not need it still check)."""
    from .archs.registry import load_problems
    from .diagnostics import warning

    return [warning(codes.ARCH_FILE_INVALID, f"architecture file left out: {p}", None,
                    help="fix the file (see `mecha explain-code W0229`), or take it off MECHA_PATH")
            for p in load_problems()]


def load_plugins(plugins: Iterable[str | os.PathLike]) -> list[Diagnostic]:
    """Register the merge methods and model kinds of plugin files; a diagnostic for each that fails."""
    diags = []
    if plugins:
        from .kinds.registry import KINDS

        KINDS.names()  # the built-in kinds first: a plugin cannot take their names
    for p in plugins:
        from .methods.plugins import load_plugin_file

        problem = load_plugin_file(os.fspath(p))
        if problem:
            diags.append(error(codes.PLUGIN_FAILED, f"plugin `{os.fspath(p)}`: {problem}", None))
    return diags


# ------------------------------------------------------------------------------------------------
# plan: lower the program to the per-key plan


@dataclass
class Checked:
    """A program analysed key by key without lowering it: what `mecha check` reports. The
    coverage notes (keys kept from a first input, keys left out) and the maps that give no value
    for a key are found from the key sets, so this is fast for any recipe size."""

    program: Program
    diagnostics: list[Diagnostic]
    analysis: Analysis | None = None

    @property
    def ok(self) -> bool:
        return self.analysis is not None and not any(d.is_error for d in self.diagnostics)

    @property
    def sources(self) -> SourceMap:
        return self.program.sources

    @property
    def coverage(self) -> list[Coverage]:
        return self.analysis.coverage if self.analysis is not None else []

    @property
    def total_keys(self) -> int:
        return self.analysis.total_keys if self.analysis is not None else 0


def check(program: Program, *, strict: bool = False) -> Checked:
    """Everything `plan` finds wrong, without building the per-key plan.

    strict: keys that not every input of a merge has are errors, not notes."""
    from .graph.coverage import analyze

    diags = list(program.diagnostics)
    if any(d.is_error for d in diags):
        return Checked(program, diags)
    analysis = analyze(program)
    diags += analysis.diagnostics
    if strict:
        for c in (c for c in analysis.coverage if c.is_gap):
            diags.append(error(codes.KEYS_NOT_IN_EVERY_INPUT, c.describe(), c.origin,
                               label="keys not in every input",
                               help="without --strict these keys are kept/left out and reported"))
    return Checked(program, diags, analysis)


@dataclass
class Planned:
    """A checked program lowered to the key plan (`lowered` is None when it could not be)."""

    program: Program
    lowered: Lowered | None
    diagnostics: list[Diagnostic]
    hashes: dict[str, str] = field(default_factory=dict)  # input path -> sha256, when computed
    checked: Checked | None = None

    @property
    def ok(self) -> bool:
        return self.lowered is not None and not any(d.is_error for d in self.diagnostics)

    @property
    def sources(self) -> SourceMap:
        return self.program.sources

    @property
    def plan(self) -> Plan:
        assert self.lowered is not None, "plan() failed: look at .diagnostics"
        return self.lowered.plan

    @property
    def coverage(self) -> list[Coverage]:
        return self.checked.coverage if self.checked is not None else []

    @property
    def total_keys(self) -> int:
        return sum(len(o.tensors) for o in self.plan.outputs) if self.lowered else 0

    @property
    def total_bytes(self) -> int:
        return sum(o.data_bytes for o in self.plan.outputs) if self.lowered else 0


def plan(program: Program, *, output: str | os.PathLike | None = None, precision: str = "fp32",
         strict: bool = False, hash_inputs: bool = False, trace: bool = False,
         shard_size: int | str | None = None) -> Planned:
    """The key plan of a checked program: every output's exact header and each key's expression.

    output: write the (one) export here instead of where the recipe says (`-o`).
    strict: keys that not every input of a merge has are errors, not notes.
    hash_inputs: compute every input's sha256 (cached) and record it in the outputs' metadata;
        inputs given with `sha256=` are always hashed and compared.
    trace: keep, for `explain`, which rule set each hyperparameter of each key.
    shard_size: the largest shard of `as hf` exports that do not say (bytes, or "5GB").
    """
    from .graph.lower import Lowerer
    from .graph.metadata import build_metadata

    checked = check(program, strict=strict)
    diags = list(checked.diagnostics)
    if precision not in PRECISIONS:
        diags.append(error(codes.INVALID_OPTION, f"precision must be one of {', '.join(PRECISIONS)}, "
                                                 f"not {precision!r}", None))
    shard_bytes = None
    if shard_size is not None:
        from .units import parse_size

        shard_bytes = parse_size(shard_size)
        if shard_bytes is None:
            diags.append(error(codes.BAD_SHARD_SIZE, f"--shard-size must be a size such as 5GB or 500MiB, "
                                                     f"not {shard_size!r}", None))
    if any(d.is_error for d in diags):
        return Planned(program, None, diags, checked=checked)
    exports = program.runnable_exports
    outs = None
    if output is not None:
        if len(exports) != 1:
            diags.append(error(codes.OUTPUT_NEEDS_ONE_EXPORT, f"-o needs a recipe with one export; this one "
                                                              f"has {len(exports)}", None))
            return Planned(program, None, diags, checked=checked)
        target = Path(output).expanduser().resolve()
        if any(Path(n.load.path) == target for n in exports[0].node.walk() if n.load is not None):
            diags.append(error(codes.OUTPUT_IS_INPUT, f"the output `{output}` is one of the recipe's inputs",
                               None, help="write to another file"))
            return Planned(program, None, diags, checked=checked)
        outs = [str(target)]
    hashes: dict[str, str] = {}
    if hash_inputs or any(n.load.sha256 for n in program.builder.file_nodes()):
        hashes, bad = _hash_inputs(program)
        diags += bad
        if bad:
            return Planned(program, None, diags, hashes, checked)
    recorded = hashes if hash_inputs else None
    lowerer = Lowerer(program, precision=precision, output_paths=outs, trace=trace, shard_size=shard_bytes,
                      metadata=lambda ex, path: build_metadata(program, ex, path, hashes=recorded))
    lowered = lowerer.lower()
    for i, keys in lowerer.left_out_of_diffusers.items():
        if keys:
            from .graph.coverage import summarize_keys
            from .paths import shown_path

            diags.append(warning(codes.DIFFUSERS_LEFT_OUT,
                                 f"{len(keys)} key{'s' if len(keys) != 1 else ''} with no place in a diffusers "
                                 f"pipeline left out of `{shown_path(lowerer.export_paths[i])}/`: "
                                 f"{summarize_keys(keys)}", exports[i].span, label="written as diffusers",
                                 help="a single-file export keeps them"))
    for i, keys in lowerer.left_out_of_lora.items():
        if keys:
            from .graph.coverage import summarize_keys
            from .paths import shown_path

            ex = exports[i]
            diags.append(warning(codes.LORA_EXPORT_LEFT_OUT,
                                 f"{len(keys)} key{'s' if len(keys) != 1 else ''} with no LoRA form left out of "
                                 f"`{shown_path(lowerer.export_paths[i])}`: {summarize_keys(keys)}",
                                 ex.span, label="written as a LoRA",
                                 help="biases and norms have no low-rank form; bake the delta into a model "
                                      "to keep them"))
    return Planned(program, lowered, diags, hashes, checked)


def _hash_inputs(program: Program) -> tuple[dict[str, str], list[Diagnostic]]:
    from .runtime.hashing import sha256_source

    hashes: dict[str, str] = {}
    bad = []
    for n in program.builder.file_nodes():
        sha = hashes.get(n.load.path) or sha256_source([f.path for f in n.load.header.files])
        hashes[n.load.path] = sha
        if n.load.sha256 and n.load.sha256 != sha:
            bad.append(error(codes.SHA256_MISMATCH,
                             f"`{Path(n.load.path).name}` does not have the sha256 the recipe expects",
                             n.origin, label="sha256 given here",
                             notes=[f"expected {n.load.sha256}", f"found    {sha}"]))
    return hashes, bad


# ------------------------------------------------------------------------------------------------
# execute / run


@dataclass
class RunResult:
    """What a run did: `stats` when it completed; diagnostics when it did not (nothing is written
    then). `interrupted` is set for Ctrl-C and for a `cancel` event."""

    planned: Planned
    diagnostics: list[Diagnostic]
    stats: RunStats | None = None
    interrupted: bool = False

    @property
    def ok(self) -> bool:
        return self.stats is not None and not any(d.is_error for d in self.diagnostics)

    @property
    def outputs(self) -> list[str]:
        return [o.path for o in self.planned.plan.outputs] if self.planned.lowered else []


def execute(planned: Planned, *, device: str = "cpu", threads: int | None = None,
            overwrite: bool = False, check_finite: bool = False, progress: Progress | None = None,
            cancel: threading.Event | None = None) -> RunResult:
    """Run a plan: every output is written completely, or not at all.

    device: "cpu", "cuda" or "cuda:N". threads: worker threads (default: the cores).
    overwrite: replace existing outputs (never an input: the checker refuses that).
    check_finite: fail if a float output has NaN or inf values.
    progress: called as tensors are written, with (tensors, bytes) increments that add up to
        `planned.total_keys` and `planned.total_bytes`.
    cancel: set it from another thread to stop the run; nothing is written.
    """
    problems = preflight(planned, overwrite=overwrite, threads=threads, device=device)
    diags = list(planned.diagnostics) + problems
    if problems or not planned.ok:
        return RunResult(planned, diags)
    from .runtime import early
    from .runtime.errors import RunCancelled, RuntimeFailure

    reads = early.start(planned.plan)  # the disk starts while torch is being imported
    try:
        from .runtime.executor import execute as execute_plan

        stats = execute_plan(planned.plan, threads=threads, device=device, check_finite=check_finite,
                             progress=progress, cancel=cancel, early=reads)
    except RunCancelled:
        diags.append(error(codes.RUN_INTERRUPTED, "the run was cancelled: no output was written", None))
        return RunResult(planned, diags, interrupted=True)
    except KeyboardInterrupt:
        diags.append(error(codes.RUN_INTERRUPTED, "interrupted: no output was written", None))
        return RunResult(planned, diags, interrupted=True)
    except RuntimeFailure as exc:
        where = f" (key `{exc.key}`)" if exc.key and exc.key not in exc.message else ""
        diags.append(error(codes.RUN_FAILED, exc.message + where, exc.origin,
                           label="while computing this" if exc.origin else "",
                           notes=["no output was written"]))
        return RunResult(planned, diags)
    finally:
        if reads is not None:  # a run that failed before reading stops the early reads too
            reads.stop()
    return RunResult(planned, diags, stats)


_DEVICE = re.compile(r"cpu|cuda(:\d+)?|mps")


def preflight(planned: Planned, *, overwrite: bool = False, threads: int | None = None,
              device: str = "cpu") -> list[Diagnostic]:
    """What stops a planned run before it starts (checked without torch): options, existing
    outputs, output folders (created here)."""
    if not planned.ok:
        return []
    diags: list[Diagnostic] = []
    if not planned.plan.outputs:
        return [error(codes.NOTHING_TO_RUN, "the recipe has no `export`: there is nothing to run",
                      None, help='add `export VALUE to "out.safetensors"`')]
    if threads is not None and threads < 1:
        diags.append(error(codes.INVALID_OPTION, f"threads must be at least 1, not {threads}", None))
    if not _DEVICE.fullmatch(device):
        diags.append(error(codes.INVALID_OPTION, f"device must be cpu, cuda or cuda:N, not {device!r}", None))
    for f in planned.plan.folders:
        if os.path.lexists(f.path) and not os.path.isdir(f.path):
            diags.append(error(codes.OUTPUT_FORMAT_MISMATCH, f"the output folder `{shown_path(f.path)}` is a file",
                               None, help="write the folder elsewhere"))
        elif os.path.exists(f.path) and not overwrite:
            diags.append(error(codes.OUTPUT_EXISTS, f"the output folder `{shown_path(f.path)}` exists", None,
                               help="pass --overwrite (overwrite=True) to replace it (all of it)"))
    for p in (o.path for o in planned.plan.outputs
              if not o.folder and os.path.exists(o.path) and not overwrite):
        diags.append(error(codes.OUTPUT_EXISTS, f"the output `{shown_path(p)}` exists", None,
                           help="pass --overwrite (overwrite=True) to replace it"))
    if diags:
        return diags
    for o in planned.plan.outputs:
        # a folder output's parent (the folder itself appears only when complete)
        folder = os.path.dirname(o.folder or o.path)
        try:
            os.makedirs(folder, exist_ok=True)
        except OSError as exc:
            return [error(codes.OUTPUT_FOLDER_FAILED, f"cannot create the output folder `{shown_path(folder)}`: "
                                                      f"{exc.strerror or exc}", None)]
    return []


def run(program: Program, *, output: str | os.PathLike | None = None, precision: str = "fp32",
        strict: bool = False, hash_inputs: bool = False, device: str = "cpu",
        threads: int | None = None, overwrite: bool = False, check_finite: bool = False,
        progress: Progress | None = None, cancel: threading.Event | None = None,
        shard_size: int | str | None = None) -> RunResult:
    """`plan`, then `execute`: the options are theirs."""
    planned = plan(program, output=output, precision=precision, strict=strict, hash_inputs=hash_inputs,
                   shard_size=shard_size)
    return execute(planned, device=device, threads=threads, overwrite=overwrite,
                   check_finite=check_finite, progress=progress, cancel=cancel)

