"""The page's JSON, both ways: a posted form → `FormState` (every name checked against the models
folder), and the catalog, methods, architectures and diagnostics → JSON for the page's script."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..commands.catalog import ModelEntry
from ..commands.quick_form import DTYPES, FormState, arch_blocks, hyper_description, method_specs, preset_weights
from ..units import format_bytes
from .guard import Guard, Refused


def catalog_json(entries: list[ModelEntry]) -> list[dict]:
    return [{"name": e.name, "arch": e.arch, "size": e.size, "size_text": format_bytes(e.size), "hash": e.short_hash,
             "kind": "adapter" if e.adapter else "model", "confident": e.confident, "problem": e.problem}
            for e in entries]


def methods_json() -> dict[str, dict]:
    out = {}
    for name, spec in method_specs().items():
        hypers = []
        for h in spec.hypers:
            k = h.kind
            hypers.append({"name": h.name, "type": k.type, "lo": k.lo, "hi": k.hi, "lo_open": k.lo_open,
                           "hi_open": k.hi_open, "choices": list(k.choices), "default": h.default,
                           "required": h.required, "describe": hyper_description(h)})
        out[name] = {"models": len(spec.models), "hypers": hypers}
    return out


def arch_json(arch: str) -> dict:
    blocks, classes = arch_blocks(arch)
    presets = {n: w for n, w in preset_weights(arch).items() if len(w) == len(blocks)}
    return {"arch": arch, "blocks": list(blocks), "classes": list(classes), "presets": presets}


def diagnostics_json(result) -> list[dict]:
    """Each diagnostic with its line and column in the recipe (None when it has no place)."""
    from ..diagnostics import render_text

    out = []
    for d in result.diagnostics:
        span = d.span
        out.append({"code": d.code, "severity": d.severity.value if hasattr(d.severity, "value") else str(d.severity),
                    "message": d.message, "line": span.line if span else None, "col": span.col if span else None,
                    "end_line": span.end_line if span else None, "end_col": span.end_col if span else None,
                    "text": render_text([d], result.program.sources if result.program else None).rstrip()})
    return out


def _number(value: Any, what: str, kind: str = "float") -> float | int:
    if isinstance(value, bool):
        raise Refused(f"{what}: {value!r} is not a number", 400)
    try:
        n = int(value) if kind == "int" else float(value)
    except (TypeError, ValueError):
        raise Refused(f"{what}: {value!r} is not {'a whole number' if kind == 'int' else 'a number'}", 400) from None
    if n != n:
        raise Refused(f"{what}: not a number", 400)
    return n


def form_state(data: dict, guard: Guard, entries: list[ModelEntry]) -> FormState:
    """The posted form as the form model holds it. Model names must be files the catalog lists
    (in the models folder, no link out); anything else is refused before a recipe is made."""
    if not isinstance(data, dict):
        raise Refused("the form must be a JSON object", 400)
    by_name = {e.name: e for e in entries}
    models: list[str | None] = []
    raw = list(data.get("models") or [])[:3]
    raw += [None] * (3 - len(raw))
    for slot, name in zip("ABC", raw):
        if name in (None, ""):
            models.append(None)
            continue
        if not isinstance(name, str):
            raise Refused(f"model {slot}: not a file name", 400)
        guard.file_in(guard.models, name)  # `..`, paths and links out are refused here
        e = by_name.get(name)
        if e is None:
            raise Refused(f"model {slot}: {name!r} is not in the models folder", 404)
        if e.problem:
            raise Refused(f"model {slot}: {name}: {e.problem}")
        models.append(name)
    entries_of = [by_name.get(m) if m else None for m in models]
    method = str(data.get("method") or "weighted_sum")
    spec = method_specs().get(method)
    hypers: dict[str, Any] = {}
    for k, v in dict(data.get("hypers") or {}).items():
        h = spec.hyper(k) if spec is not None else None
        if h is None or k == "alpha" or v in (None, ""):
            continue
        if h.kind.type == "bool":
            v = bool(v)
        elif h.kind.type in ("int", "float"):
            v = _number(v, k, h.kind.type)
        else:
            v = str(v)
        if v != h.default:
            hypers[k] = v
    blocks = {str(b): float(_number(v, f"block {b}")) for b, v in dict(data.get("blocks") or {}).items()}
    dtype = data.get("dtype") or None
    if dtype not in DTYPES:
        raise Refused(f"dtype {dtype!r} is not one of {', '.join(d for d in DTYPES if d)}", 400)
    a = entries_of[0]
    arch = a.arch if a is not None and not a.adapter else None
    known_blocks, known_classes = arch_blocks(arch)
    for b in blocks:
        if b not in known_blocks:
            raise Refused(f"block {b!r} is not a block of {arch or 'model A'}", 400)
    classes_off = tuple(str(c) for c in data.get("classes_off") or ())
    for c in classes_off:
        if c not in known_classes:
            raise Refused(f"class {c!r} is not a class of {arch or 'model A'}", 400)
    preset = data.get("preset") or None
    if preset is not None and preset not in preset_weights(arch or ""):
        raise Refused(f"preset {preset!r} is not in std/presets for {arch or 'model A'}", 400)
    return FormState(guard.models, models=models, method=method, alpha=float(_number(data.get("alpha", 0.5), "alpha")),
                     hypers=hypers, force=bool(data.get("force")), dtype=dtype, name=str(data.get("name") or ""),
                     arch=arch, blocks=blocks, preset=preset, mbw=str(data.get("mbw") or ""),
                     adapters=[bool(e and e.adapter) for e in entries_of],
                     first_kind=entries_of[0].kind if entries_of and entries_of[0] else None, overwrite=bool(data.get("overwrite")),
                     out_folder=guard.output, classes_off=classes_off,
                     strength=float(_number(data.get("strength", 1.0), "strength")))


def provenance_json(path: Path) -> dict:
    """What an output says about how it was made (its safetensors metadata, read from the header)."""
    import json

    from ..archs.header import HeaderError, read_header

    try:
        meta = dict(read_header(str(path)).metadata or {})
    except HeaderError as exc:
        raise Refused(f"{path.name}: {exc.message}", 400) from None
    inputs = meta.get("mechalang.inputs")
    try:
        inputs = json.loads(inputs) if inputs else []
    except ValueError:
        inputs = []
    return {"name": path.name, "version": meta.get("mechalang.version"), "recipe": meta.get("mechalang.recipe"),
            "inputs": inputs, "metadata": meta}
