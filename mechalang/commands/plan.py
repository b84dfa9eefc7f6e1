"""`mecha plan FILE [--key GLOB]`: the lowered per-key plan and an estimate of peak memory; and
`mecha explain FILE KEY`: for one key, the formula, each hyperparameter's value and the rule (and
line) that set it."""

from __future__ import annotations

import json
import os
from typing import Any, Iterable

from .. import pipeline
from ..diagnostics import codes, did_you_mean, error
from ..graph.lower import filter_keys
from ..methods.registry import REGISTRY, literal
from ..runtime.plan import ADAPTER_OP, Op, Read
from ..units import format_bytes
from .check import load
from .output import emit, fail, shown_path


def format_expr(e, names: dict[int, str], key: str) -> str:
    """A key's expression as a formula over the inputs' names."""
    if isinstance(e, Read):
        base = names.get(e.source, f"input{e.source}")
        return base if e.key == key else f"{base}[{e.key!r}]"
    if e.op == ADAPTER_OP:  # adapter(FILE: module (kind), …[, base])
        h = dict(e.hypers)
        src = names.get(e.args[0].source, f"input{e.args[0].source}") if isinstance(e.args[0], Read) else "?"
        modules = []
        for (kind, parts, rows, _shape, _params), module in zip(h["pieces"], h["modules"]):
            modules.append(f"{module} ({kind}{f' rows {rows[0]}:{rows[1]}' if rows else ''})")
        base = f", base={format_expr(e.args[-1], names, key)}" if h["base"] else ""
        return f"adapter({src}: {', '.join(modules)}{base})"
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
    return literal(v)


def estimate_peak(plan, threads: int) -> int:
    """Bytes in flight: the largest `threads` key tasks, each its reads plus intermediates in the
    compute dtype, plus the raw buffers."""
    width = 8 if plan.precision == "fp64" else 4
    per_key: dict[str, int] = {}
    seen: dict[str, set] = {}
    for out in plan.outputs:
        for t in out.tensors:
            s = seen.setdefault(t.key, set())
            n = 1
            for d in t.shape:
                n *= d
            stack = [t.expr]
            while stack:
                e = stack.pop()
                if e in s:
                    continue
                s.add(e)
                if isinstance(e, Read):
                    per_key[t.key] = per_key.get(t.key, 0) + (e.end - e.begin) + n * width
                elif isinstance(e, Op):
                    per_key[t.key] = per_key.get(t.key, 0) + n * width
                    stack.extend(e.args)
            per_key[t.key] = per_key.get(t.key, 0) + t.nbytes
    biggest = sorted(per_key.values(), reverse=True)[:max(1, threads)]
    return sum(biggest)


def plan_command(file: str, *, sets: Iterable[str] = (), key: str | None = None,
                 models_dir: str | None = None, plugins: Iterable[str] = (), format: str = "text",
                 allow_unused: bool = False) -> int:
    planned = pipeline.plan(load(file, sets, models_dir, plugins, allow_unused=allow_unused))
    if not planned.ok:
        return fail(planned.diagnostics, planned.sources, format, file)
    emit(planned.diagnostics, planned.sources, format)
    plan = planned.plan
    names = planned.lowered.names
    threads = os.cpu_count() or 1
    rows = filter_keys(plan, key)
    if key is not None and not rows:
        return fail([_no_key(planned, key)], planned.sources, format)
    if format == "json":
        data = {"outputs": [{"path": o.path, "tensors": len(o.tensors), "bytes": o.data_bytes} for o in plan.outputs],
                "keys": [{"output": o.path, "key": t.key, "dtype": t.dtype, "shape": list(t.shape),
                          "offsets": [t.begin, t.end], "formula": format_expr(t.expr, names, t.key)} for o, t in rows],
                "estimated_peak_bytes": estimate_peak(plan, threads)}
        print(json.dumps(data, indent=2))
        return 0
    print(plan_text(planned, rows), end="")
    return 0


def plan_text(planned: pipeline.Planned, rows=None) -> str:
    """The plan as text: inputs, then each output's keys with their formulas, the memory estimate
    and the coverage notes. `rows`: the (output, tensor) pairs to show (default: all)."""
    plan = planned.plan
    names = planned.lowered.names
    threads = os.cpu_count() or 1
    rows = filter_keys(plan, None) if rows is None else rows
    out = ["inputs:"]
    for i, inp in enumerate(plan.inputs):
        out.append(f"  {names.get(i)}: {shown_path(inp.path)}")
    current = None
    for o, t in rows:
        if o is not current:
            current = o
            out.append(f"{shown_path(o.path)} ({len(o.tensors)} tensors, {format_bytes(o.data_bytes)}):")
        out.append(f"  {t.key}  {t.dtype} {list(t.shape)}  = {format_expr(t.expr, names, t.key)}")
    out.append(f"estimated peak memory with {threads} thread{'s' if threads != 1 else ''}: "
               f"{format_bytes(estimate_peak(plan, threads))} (plus the interpreter and torch)")
    for c in planned.coverage:
        out.append(f"note: {c.describe()}")
    return "\n".join(out) + "\n"


def _no_key(planned: pipeline.Planned, key: str):
    all_keys = [t.key for o in planned.plan.outputs for t in o.tensors]
    sugg = did_you_mean(key, all_keys)
    return error(codes.NO_MATCHING_KEY, f"no output key `{key}`", None,
                 help=f"did you mean `{sugg}`?" if sugg else "`mecha plan FILE` lists the output keys")


def explain_command(file: str, key: str, *, sets: Iterable[str] = (), models_dir: str | None = None,
                    plugins: Iterable[str] = (), format: str = "text", allow_unused: bool = False) -> int:
    planned = pipeline.plan(load(file, sets, models_dir, plugins, allow_unused=allow_unused), trace=True)
    if not planned.ok:
        return fail(planned.diagnostics, planned.sources, format, file)
    if not filter_keys(planned.plan, key):
        return fail(planned.diagnostics + [_no_key(planned, key)], planned.sources, format)
    emit(planned.diagnostics, planned.sources, format)
    print(explain_text(planned, key), end="")
    return 0


def explain_text(planned: pipeline.Planned, key: str) -> str:
    """How each output key matching `key` (a name or a glob) is computed (at most 5 shown)."""
    rows = filter_keys(planned.plan, key)
    if not rows:
        from ..diagnostics import render_text

        return render_text([_no_key(planned, key)])
    lowered = planned.lowered
    out: list[str] = []
    for shown, (o, t) in enumerate(rows):
        if shown >= 5:
            out.append(f"... and {len(rows) - shown} more keys match `{key}`")
            break
        ex = lowered.exports[list(planned.plan.outputs).index(o)]
        arch = ex.node.arch
        info = arch.classify(t.key)
        out.append(f"{shown_path(o.path)}  {t.key}  {t.dtype} {list(t.shape)}")
        out.append(f"  arch {arch.name} · component {info.component or '-'} · block {info.block or '-'} · "
                   f"classes {', '.join(sorted(info.classes)) or '-'}")
        out.append(f"  = {format_expr(t.expr, lowered.names, t.key)}")
        _explain_node(ex.node, t.key, planned, "  ", set(), out)
    return "\n".join(out) + "\n"


def _explain_adapter(node, key: str, name: str, indent: str) -> list[str]:
    """Which adapter tensors make `key`'s delta, by which kind's formula, with which scale."""
    from ..kinds import KINDS

    amap = node.load.adapter
    where = f"  ({node.origin.file}:{node.origin.line})" if node.origin else ""
    lines = [f"{indent}{name}: {amap.dialect} adapter{where}"]
    for p in amap.pieces(key):
        spec = KINDS.get(p.kind)
        rows = f" rows {p.rows[0]}:{p.rows[1]}" if p.rows else ""
        lines.append(f"{indent}  {p.module} ({p.kind}{', rank ' + str(p.rank) if p.rank else ''}){rows}")
        lines.append(f"{indent}    {spec.formula if spec else ''}")
        params = dict(p.params)
        parts = dict(p.parts)
        if p.kind in ("lora", "loha", "lokr", "lora_embedding") and p.rank:
            if "alpha" in parts:
                alpha = f"α from `{parts['alpha']}`"
            elif "alpha" in params:
                alpha = f"α = {_num(params['alpha'])} (adapter_config.json)"
            else:
                alpha = "no α: α = r (scale 1)"
            lines.append(f"{indent}    scale α/{'√' if params.get('rslora') else ''}r, r = {p.rank}, {alpha}")
        for part, tensor in p.parts:
            lines.append(f"{indent}    {part} = `{tensor}`")
    return lines


def _explain_node(node, key: str, planned: pipeline.Planned, indent: str, seen: set, out: list[str]) -> None:
    lowerer = planned.lowered.lowerer
    if node.op == "adapter" and node.id not in seen and key in node.keys:
        seen.add(node.id)
        out.extend(_explain_adapter(node, key, lowerer.node_name(node), indent))
        return
    if node.op == "load" or node.id in seen or key not in node.keys:
        return
    seen.add(node.id)
    where = f"  ({node.origin.file}:{node.origin.line})" if node.origin else ""
    spec = REGISTRY.get(node.op)
    formula = f"  {spec.formula}" if spec and spec.formula else ""
    out.append(f"{indent}{lowerer.node_name(node) if node.op not in ('add', 'sub', 'scale') else node.op}"
               f"{where}{formula}")
    if spec is not None and spec.peer_notes:
        import textwrap

        out.extend(textwrap.wrap(spec.peer_notes, 96, initial_indent=indent + "  ",
                                 subsequent_indent=indent + "  "))
    for tr in lowerer.traces.get((node.id, key), []):
        src = ""
        if tr.span is not None:
            line = planned.sources.line(tr.span.file, tr.span.line)
            text = line[tr.span.col - 1: tr.span.end_col - 1] if line and tr.span.line == tr.span.end_line else ""
            src = f"  set by `{text.strip()}` at {tr.span.file}:{tr.span.line}:{tr.span.col}" if text else \
                f"  at {tr.span.file}:{tr.span.line}"
        out.append(f"{indent}  {tr.name} = {_num(tr.value)}  ({tr.source}){src}")
    for a in node.args:
        _explain_node(a, key, planned, indent + "  ", seen, out)



