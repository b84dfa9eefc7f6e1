"""What each `mecha` command does, over the shared pipeline: load → check → lower → (execute).

Torch is imported only by `run`/`merge`, inside the function that executes a plan.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .paths import models_dirs
from .diagnostics import Diagnostic, SourceMap, codes, count_summary, error, render_json, render_text


# ------------------------------------------------------------------------------------------------
# Output


def emit(diags: list[Diagnostic], sources: SourceMap, format: str, stream=None) -> None:
    if not diags:
        return
    stream = stream or sys.stderr
    if format == "json":
        stream.write(render_json(diags) + "\n")
    else:
        stream.write(render_text(_sorted(diags), sources))


def _sorted(diags: list[Diagnostic]) -> list[Diagnostic]:
    def key(d: Diagnostic):
        s = d.span
        return (0 if d.is_error else 1, s.file if s else "", s.line if s else 0, s.col if s else 0)

    return sorted(diags, key=key)


# ------------------------------------------------------------------------------------------------
# The pipeline


@dataclass
class Compiled:
    program: Any  # check.evaluate.Program
    lowered: Any | None  # graph.lower.Lowered
    diagnostics: list[Diagnostic]
    sources: SourceMap

    @property
    def ok(self) -> bool:
        return not any(d.is_error for d in self.diagnostics)


def parse_sets(sets: list[str]) -> tuple[dict[str, str], list[Diagnostic]]:
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


def compile_recipe(file: str, sets: list[str], models_dir: str | None, *, strict: bool = False,
                   force: bool = False, text: str | None = None, display: str | None = None,
                   precision: str = "fp32", output: str | None = None, trace: bool = False,
                   hashes: dict[str, str] | None = None) -> Compiled:
    from .check.evaluate import Evaluator, Options
    from .graph.lower import Lowerer
    from .graph.metadata import build_metadata, resolved_recipe_text
    from .syntax.sdmecha import is_sdmecha

    set_values, diags = parse_sets(sets)
    options = Options(models_dirs=models_dirs(models_dir), sets=set_values, force=force)
    ev = Evaluator(options)
    path = Path(file)
    if text is None and path.is_file():
        try:
            head = path.read_bytes()[:4096].decode("utf-8", "replace")
        except OSError:
            head = ""
        if is_sdmecha(head):
            text, display = _convert_sdmecha(path, ev, diags)
    program = ev.run_main(path.resolve() if path.exists() else path, text=text, display=display or (file if text is not None else None))
    diags = diags + program.diagnostics
    lowered = None
    if program.ok and not any(d.is_error for d in diags):
        exports = [e for e in program.exports if e.node is not None and e.path is not None]
        outs = None
        if output is not None:
            if len(exports) != 1:
                diags.append(error(codes.OUTPUT_NEEDS_ONE_EXPORT, f"-o needs a recipe with one export; this one has {len(exports)}", None))
                return Compiled(program, None, diags, ev.sources)
            outs = [str(Path(output).expanduser().resolve())]
            inputs = {n.load.path for n in exports[0].node.walk() if n.op == "load"}
            if outs[0] in inputs:
                diags.append(error(codes.OUTPUT_IS_INPUT, f"the output `{output}` is one of the recipe's inputs", None))
                return Compiled(program, None, diags, ev.sources)
        recipe_text = resolved_recipe_text(program) if program.main and program.main.tree else ""
        lowerer = Lowerer(program, precision=precision, output_paths=outs, trace=trace,
                          metadata=lambda ex: build_metadata(program, None, ex, hashes=hashes,
                                                             recipe_text=recipe_text))
        lowered = lowerer.lower()
        diags += lowered.diagnostics
        for c in lowered.coverage:
            span = c.origin
            if strict:
                diags.append(error(codes.KEYS_NOT_IN_EVERY_INPUT, c.describe(), span, label="keys not in every input",
                                   help="without --strict these keys are kept/left out and reported"))
    return Compiled(program, lowered, diags, ev.sources)


def _convert_sdmecha(path: Path, ev, diags: list[Diagnostic]) -> tuple[str | None, str | None]:
    from .syntax.printer import print_module
    from .syntax.sdmecha import read_sdmecha

    raw = path.read_text(encoding="utf-8", errors="replace")
    ev.sources.add(str(path), raw)
    module, d = read_sdmecha(raw, str(path))
    diags.extend(d)
    if module is None:
        return "", f"{path} (converted)"
    return print_module(module), f"{path} (converted)"


def _summary_line(c: Compiled, file: str) -> str:
    p = c.program
    exports = [e for e in p.exports if e.node is not None]
    loads = {}
    for e in exports:
        for n in e.node.walk():
            if n.op == "load":
                loads[n.load.path] = n.arch.name
    archs = sorted(set(loads.values()))
    keys = sum(len(o.tensors) for o in c.lowered.plan.outputs) if c.lowered else 0
    return (f"ok: {file}: {len(exports)} export{'s' if len(exports) != 1 else ''}, "
            f"{len(loads)} model{'s' if len(loads) != 1 else ''} ({', '.join(archs) or 'none'}), "
            f"{keys} output keys")


def _coverage_lines(c: Compiled) -> list[str]:
    return [c_.describe() for c_ in (c.lowered.coverage if c.lowered else [])]


# ------------------------------------------------------------------------------------------------
# check


def check_command(file: str, sets: list[str], models_dir: str | None, strict: bool, format: str) -> int:
    c = compile_recipe(file, sets, models_dir, strict=strict)
    if format == "json":
        sys.stdout.write(render_json(_sorted(c.diagnostics)) + "\n")
        return 0 if c.ok else 1
    emit(c.diagnostics, c.sources, format)
    if not c.ok:
        sys.stderr.write(f"{file}: {count_summary(c.diagnostics)}\n")
        return 1
    print(_summary_line(c, file) + (f"; {count_summary(c.diagnostics)}" if c.diagnostics else ""))
    for line in _coverage_lines(c):
        print(f"  note: {line}")
    return 0


# ------------------------------------------------------------------------------------------------
# run


def run_command(file: str, *, set_: list[str], output: str | None, models_dir: str | None, device: str,
                threads: int | None, precision: str, overwrite: bool, strict: bool, dry_run: bool,
                check_finite: bool, hash_inputs: bool, plugins: list[str], format: str,
                text: str | None = None, display: str | None = None, force: bool = False) -> int:
    if precision not in ("fp32", "fp64"):
        sys.stderr.write(f"error: --precision must be fp32 or fp64, not {precision!r}\n")
        return 2
    if threads is not None and threads < 1:
        sys.stderr.write("error: --threads must be at least 1\n")
        return 2
    if not _load_plugins(plugins):
        return 1
    t0 = time.perf_counter()
    c = compile_recipe(file, set_, models_dir, strict=strict, precision=precision, output=output,
                       text=text, display=display, force=force)
    if c.ok and (hash_inputs or _needs_hashes(c)):
        hashes = _hash_inputs(c)
        if hashes is None:
            return 1
        c = compile_recipe(file, set_, models_dir, strict=strict, precision=precision, output=output,
                           text=text, display=display, force=force, hashes=hashes if hash_inputs else None)
    emit(c.diagnostics, c.sources, format)
    if not c.ok:
        sys.stderr.write(f"{file}: {count_summary(c.diagnostics)}\n")
        return 1
    plan = c.lowered.plan
    existing = [o.path for o in plan.outputs if os.path.exists(o.path)]
    if existing and not overwrite:
        for p in existing:
            sys.stderr.write(f"error: output `{os.path.relpath(p)}` exists; pass --overwrite to replace it\n")
        return 1
    if dry_run:
        print(_summary_line(c, file))
        for o in plan.outputs:
            print(f"  would write {os.path.relpath(o.path)}: {len(o.tensors)} tensors, {_fmt_bytes(o.data_bytes)}")
        for line in _coverage_lines(c):
            print(f"  note: {line}")
        return 0
    for o in plan.outputs:
        folder = os.path.dirname(o.path)
        try:
            os.makedirs(folder, exist_ok=True)
        except OSError as exc:
            sys.stderr.write(f"error: cannot create the output folder {folder}: {exc.strerror}\n")
            return 1
    from .runtime.errors import RuntimeFailure

    try:
        from .runtime.executor import execute
        from .runtime.progress import make_progress

        total_keys = sum(len(o.tensors) for o in plan.outputs)
        total_bytes = sum(o.data_bytes for o in plan.outputs)
        with make_progress(total_keys, total_bytes) as bar:
            stats = execute(plan, threads=threads, device=device, check_finite=check_finite, progress=bar.advance)
    except RuntimeFailure as exc:
        d = error(codes.RUN_FAILED, exc.message + (f" (key `{exc.key}`)" if exc.key and exc.key not in exc.message else ""),
                  exc.origin, label="while computing this" if exc.origin else "")
        emit([d], c.sources, format)
        sys.stderr.write("no output was written\n")
        return 1
    except KeyboardInterrupt:
        sys.stderr.write("\ninterrupted: no output was written\n")
        return 130
    elapsed = time.perf_counter() - t0
    for o in plan.outputs:
        print(f"wrote {os.path.relpath(o.path)}: {len(o.tensors)} tensors, {_fmt_bytes(o.data_bytes)}")
    peak = getattr(stats, "peak_rss", None)
    print(f"done in {elapsed:.1f} s" + (f", peak memory {_fmt_bytes(peak)}" if peak else ""))
    for line in _coverage_lines(c):
        print(f"  note: {line}")
    return 0


def _fmt_bytes(n: float) -> str:
    from .units import format_bytes

    return format_bytes(n)


def _needs_hashes(c: Compiled) -> bool:
    return any(n.load.sha256 for n in c.program.builder.nodes("load"))


def _hash_inputs(c: Compiled) -> dict[str, str] | None:
    from .runtime.hashing import sha256_file

    hashes = {}
    bad = []
    for n in c.program.builder.nodes("load"):
        sha = sha256_file(n.load.path)
        hashes[n.load.path] = sha
        if n.load.sha256 and n.load.sha256 != sha:
            bad.append(error(codes.SHA256_MISMATCH, f"`{Path(n.load.path).name}` does not have the sha256 the recipe expects",
                             n.origin, label="sha256 given here",
                             notes=[f"expected {n.load.sha256}", f"found    {sha}"]))
    if bad:
        emit(bad, c.sources, "text")
        return None
    return hashes


def _load_plugins(plugins: list[str]) -> bool:
    from .methods.plugins import load_plugin_file

    for p in plugins:
        problem = load_plugin_file(p)
        if problem:
            sys.stderr.write(f"error: --plugin {p}: {problem}\n")
            return False
    return True


# ------------------------------------------------------------------------------------------------
# plan / explain


def format_expr(e, names: dict[int, str], key: str) -> str:
    from .graph.plan import Read

    if isinstance(e, Read):
        base = names.get(e.source, f"input{e.source}")
        return base if e.key == key else f"{base}[{e.key!r}]"
    args = [format_expr(a, names, key) for a in e.args]
    if e.op == "add":
        return f"({args[0]} + {args[1]})"
    if e.op == "sub":
        return f"({args[0]} - {args[1]})"
    if e.op == "scale":
        return f"{_num(dict(e.hypers)['factor'])} * {args[0]}"
    hyp = [f"{k.rstrip('_')}={_num(v)}" for k, v in e.hypers]
    return f"{e.op}({', '.join(args + hyp)})"


def _num(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    return repr(v) if isinstance(v, str) else str(v).lower() if isinstance(v, bool) else str(v)


def estimate_peak(plan, threads: int) -> int:
    """Bytes in flight: the largest `threads` key tasks, each its reads plus intermediates in the
    compute dtype, plus the raw buffers."""
    from .graph.plan import Op, Read

    width = 8 if plan.precision == "fp64" else 4
    per_key: dict[str, int] = {}
    seen: dict[str, set] = {}
    for out in plan.outputs:
        for t in out.tensors:
            s = seen.setdefault(t.key, set())
            stack = [t.expr]
            while stack:
                e = stack.pop()
                if e in s:
                    continue
                s.add(e)
                n = 1
                for d in t.shape:
                    n *= d
                if isinstance(e, Read):
                    per_key[t.key] = per_key.get(t.key, 0) + (e.end - e.begin) + n * width
                elif isinstance(e, Op):
                    per_key[t.key] = per_key.get(t.key, 0) + n * width
                    stack.extend(e.args)
            per_key[t.key] = per_key.get(t.key, 0) + t.nbytes
    biggest = sorted(per_key.values(), reverse=True)[:max(1, threads)]
    return sum(biggest)


def plan_command(file: str, sets: list[str], key: str | None, models_dir: str | None, format: str) -> int:
    from .graph.lower import filter_keys

    c = compile_recipe(file, sets, models_dir)
    emit(c.diagnostics, c.sources, format)
    if not c.ok:
        return 1
    plan = c.lowered.plan
    names = c.lowered.names
    threads = os.cpu_count() or 1
    rows = filter_keys(plan, key)
    if format == "json":
        data = {"outputs": [{"path": o.path, "tensors": len(o.tensors), "bytes": o.data_bytes} for o in plan.outputs],
                "keys": [{"output": o.path, "key": t.key, "dtype": t.dtype, "shape": list(t.shape),
                          "offsets": [t.begin, t.end], "formula": format_expr(t.expr, names, t.key)} for o, t in rows],
                "estimated_peak_bytes": estimate_peak(plan, threads)}
        print(json.dumps(data, indent=2))
        return 0
    print("inputs:")
    for i, inp in enumerate(plan.inputs):
        print(f"  {names.get(i)}: {os.path.relpath(inp.path)}")
    current = None
    for o, t in rows:
        if o is not current:
            current = o
            print(f"{os.path.relpath(o.path)} ({len(o.tensors)} tensors, {_fmt_bytes(o.data_bytes)}):")
        print(f"  {t.key}  {t.dtype} {list(t.shape)}  = {format_expr(t.expr, names, t.key)}")
    if key is not None and not rows:
        print(f"no output key matches `{key}`")
        return 1
    print(f"estimated peak memory with {threads} thread{'s' if threads != 1 else ''}: "
          f"{_fmt_bytes(estimate_peak(plan, threads))} (plus the interpreter and torch)")
    for line in _coverage_lines(c):
        print(f"note: {line}")
    return 0


def explain_command(file: str, key: str, sets: list[str], models_dir: str | None, format: str) -> int:
    from .graph.lower import filter_keys

    c = compile_recipe(file, sets, models_dir, trace=True)
    emit(c.diagnostics, c.sources, format)
    if not c.ok:
        return 1
    rows = filter_keys(c.lowered.plan, key)
    if not rows:
        from .diagnostics import did_you_mean

        all_keys = [t.key for o in c.lowered.plan.outputs for t in o.tensors]
        sugg = did_you_mean(key, all_keys)
        sys.stderr.write(f"error: no output key `{key}`" + (f"; did you mean `{sugg}`?" if sugg else "") + "\n")
        return 1
    lowerer = c.lowered.lowerer
    shown = 0
    for (o, t), ex in ((r, _export_for(c, r[0])) for r in rows):
        if shown >= 5:
            print(f"... and {len(rows) - shown} more keys match `{key}`")
            break
        shown += 1
        arch = ex.node.arch
        info = arch.classify(t.key)
        print(f"{os.path.relpath(o.path)}  {t.key}  {t.dtype} {list(t.shape)}")
        print(f"  arch {arch.name} · component {info.component or '-'} · block {info.block or '-'} · "
              f"classes {', '.join(sorted(info.classes)) or '-'}")
        print(f"  = {format_expr(t.expr, c.lowered.names, t.key)}")
        _explain_node(ex.node, t.key, lowerer, c, "  ", set())
    return 0


def _export_for(c: Compiled, out) -> Any:
    idx = list(c.lowered.plan.outputs).index(out)
    return c.lowered.exports[idx]


def _explain_node(node, key: str, lowerer, c: Compiled, indent: str, seen: set) -> None:
    from .methods.registry import REGISTRY

    if node.op == "load" or node.id in seen or key not in node.keys:
        return
    seen.add(node.id)
    where = f"  ({node.origin.file}:{node.origin.line})" if node.origin else ""
    spec = REGISTRY.get(node.op)
    formula = f"  {spec.formula}" if spec and spec.formula else ""
    print(f"{indent}{lowerer.node_name(node) if node.op not in ('add', 'sub', 'scale') else node.op}{where}{formula}")
    for tr in lowerer.traces.get((node.id, key), []):
        src = ""
        if tr.span is not None:
            line = c.sources.line(tr.span.file, tr.span.line)
            text = line[tr.span.col - 1: tr.span.end_col - 1] if line and tr.span.line == tr.span.end_line else ""
            src = f"  set by `{text.strip()}` at {tr.span.file}:{tr.span.line}:{tr.span.col}" if text else \
                f"  at {tr.span.file}:{tr.span.line}"
        print(f"{indent}  {tr.name} = {_num(tr.value)}  ({tr.source}){src}")
    for a in node.args:
        _explain_node(a, key, lowerer, c, indent + "  ", seen)


# ------------------------------------------------------------------------------------------------
# info


def info_command(arch: str | None, verbose: bool, methods: bool, plugins: list[str]) -> int:
    if not _load_plugins(plugins):
        return 1
    if methods:
        from .methods.registry import REGISTRY

        for spec in REGISTRY.all():
            print(spec.signature())
            if spec.formula:
                print(f"    {spec.formula}" + ("   (element-wise)" if spec.elementwise else ""))
            if spec.source != "builtin":
                print(f"    (from {spec.source})")
        return 0
    from .archs.info import info_text

    text, code = info_text(arch, verbose)
    (sys.stdout if code == 0 else sys.stderr).write(text if text.endswith("\n") else text + "\n")
    return code


# ------------------------------------------------------------------------------------------------
# merge


QUICK_METHODS = ("weighted_sum", "sigmoid", "inv_sigmoid", "add_difference")


def merge_command(models: list[str], *, method: str, alpha: float, force: bool, name: str | None,
                  models_dir: str | None, overwrite: bool, print_recipe: bool, device: str,
                  threads: int | None, dtype: str | None) -> int:
    import re

    from .diagnostics import did_you_mean

    if method not in QUICK_METHODS:
        sugg = did_you_mean(method, QUICK_METHODS)
        sys.stderr.write(f"error: --method {method!r} is not a quick-merge method"
                         + (f"; did you mean {sugg!r}?" if sugg else "") + f" (one of {', '.join(QUICK_METHODS)})\n")
        return 2
    want = 3 if method == "add_difference" else 2
    if len(models) != want:
        sys.stderr.write(f"error: {method} takes {want} models, {len(models)} given\n")
        return 2
    if name is not None and not re.fullmatch(r"[A-Za-z0-9.+-]+", name):
        sys.stderr.write(f"error: --name {name!r}: use only letters, digits and . + -\n")
        return 2
    if dtype is not None and dtype not in ("fp16", "bf16", "fp32"):
        sys.stderr.write("error: --dtype must be fp16, bf16 or fp32\n")
        return 2
    stems = [Path(m).stem for m in models]
    out_name = (name or "_".join(stems) + f"_{method}_{alpha:g}").removesuffix(".safetensors") + ".safetensors"
    out_dir = Path(models_dir).expanduser() if models_dir else Path.cwd()
    lets = []
    idents = []
    for i, (m, stem) in enumerate(zip(models, stems)):
        ident = re.sub(r"\W", "_", stem)
        if not ident or ident[0].isdigit() or ident in idents or ident in ("model", "key", "mbw"):
            ident = f"m{i}_{ident}".strip("_")
        idents.append(ident)
        lets.append(f"let {ident} = model({json.dumps(m)})")
    call = f"{method}({', '.join(idents)}, alpha={alpha!r})"
    out_path = str(out_dir / out_name)
    text = "\n".join(lets) + f"\n\nexport {call} to {json.dumps(out_path)}" + (f" as {dtype}" if dtype else "") + "\n"
    if print_recipe:
        print(text, end="")
        return 0
    return run_command("<merge>", set_=[], output=None, models_dir=models_dir, device=device, threads=threads,
                       precision="fp32", overwrite=overwrite, strict=False, dry_run=False, check_finite=False,
                       hash_inputs=False, plugins=[], format="text", text=text, display="<merge>", force=force)
