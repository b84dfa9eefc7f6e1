"""`export m to "out/" as diffusers(dtype="fp16", variant="fp16", config="base/")`: a model written
as a diffusers pipeline folder. Checked here without reading a tensor:

- the model's architecture has a diffusers layout (stdlib/keymaps `[diffusers]`);
- the folder's other files (model_index.json, component configs, tokenizers, scheduler) come from a
  pipeline folder of the same architecture: `config=`, else the model's first input that is a
  diffusers pipeline; with neither (every input a single file) the export is refused, since a
  pipeline cannot be loaded without its configs;
- the output path names a folder (no file suffix: check/evaluate.py `output_path`), never an
  input nor a folder holding one;
- components the config pipeline has and the model lacks (a UNet-only merge) are copied from it
  unchanged, and keys with no place in the layout are left out: both are reported as warnings.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from ..diagnostics import codes, did_you_mean, warning
from ..dtypes import EXPORT_DTYPES
from ..graph.diffusers_export import DiffusersFormat
from ..sources.diffusers import read_model_index
from ..syntax import ast
from .values import POISON, ModelValue, a_type

OPTIONS = ("dtype", "variant", "config")


def diffusers_export(ev, stmt, value: Any, env) -> tuple[Any, DiffusersFormat | None]:
    from ..archs import diffusers_map as dm

    call = stmt.format
    opts: dict[str, Any] = {}
    ok = True
    for arg in call.args if call is not None else ():
        ev.err(codes.WRONG_ARGUMENT_COUNT, "`as diffusers(...)` takes its options by name", arg.span,
               help='as diffusers(dtype="fp16")')
        ok = False
    for kw in call.kwargs if call is not None else ():
        if kw.name not in OPTIONS:
            sugg = did_you_mean(kw.name, list(OPTIONS))
            ev.err(codes.NO_SUCH_KEYWORD, f"`as diffusers(...)` has no option `{kw.name}`", kw.name_span or kw.span,
                   help=f"did you mean `{sugg}`?" if sugg else "options: " + ", ".join(OPTIONS))
            ok = False
            continue
        if kw.name == "dtype" and isinstance(kw.value, ast.HyperMap):
            continue  # per-key dtypes: checked with the export (evaluate.folder_dtype_map)
        opts[kw.name] = (ev.eval(kw.value, env), kw.value.span)
    dtype, dspan = opts.get("dtype", (None, None))
    if dtype is not None and dtype not in EXPORT_DTYPES:
        ev.err(codes.UNKNOWN_OUTPUT_DTYPE, f"unknown output dtype {dtype!r}", dspan,
               help=f"use one of {', '.join(EXPORT_DTYPES)}")
        ok = False
    variant, vspan = opts.get("variant", (None, None))
    if variant is not None and not (isinstance(variant, str) and re.fullmatch(r"[A-Za-z0-9_]+", variant)):
        ev.err(codes.HYPER_OUT_OF_RANGE, f"variant= is a name such as \"fp16\" (letters, digits, _), found {variant!r}",
               vspan)
        ok = False
    if value is POISON:
        return None, None
    if not isinstance(value, ModelValue) or value.node.space != "weight":
        what = value.node.type_name if isinstance(value, ModelValue) else a_type(value)
        ev.err(codes.EXPORT_NOT_MODEL, f"a diffusers export needs a Model, found {what}", stmt.value.span)
        return None, None
    node = value.node
    arch = getattr(node.arch, "name", None)
    if arch is None or dm.layout(arch) is None:
        have = ", ".join(dm.archs_with_layout())
        ev.err(codes.DIFFUSERS_NO_LAYOUT, f"`{arch}` has no diffusers pipeline layout", stmt.span,
               help=f"architectures with one: {have}; write a single file instead (no `as diffusers`)")
        return None, None
    config, cspan = opts.get("config", (None, None))
    src = _config_source(ev, node, config, cspan or stmt.span, arch)
    if src is None or not ok:
        return None, None
    folder, cls = src
    present = _components(node, arch)
    index = read_model_index(folder)
    copied = tuple(c.folder for c in dm.layout(arch).components
                   if c.folder not in present and isinstance(index.get(c.folder), list) and index[c.folder][0])
    if copied:
        ev.report(warning(codes.DIFFUSERS_COPIED,
                          f"the exported model has no {', '.join(copied)} keys: "
                          f"{', '.join(c + '/' for c in copied)} copied unchanged from `{_shown(folder)}`",
                          stmt.span, help="merge the whole pipeline to merge those too"))
    missing = [c for c in present if not isinstance(index.get(c), list) or not index[c][0]]
    if missing:
        ev.report(warning(codes.DIFFUSERS_LEFT_OUT,
                          f"`{_shown(folder)}` ({cls}) has no {', '.join(missing)} component: the model's "
                          f"{', '.join(missing)} keys are left out of the folder", stmt.span))
    return node, DiffusersFormat(arch, folder, dtype, variant, copied, tuple(missing))


def _config_source(ev, node, config, span, arch: str) -> tuple[str, str] | None:
    """(the config pipeline folder, its pipeline class), or None (reported)."""

    if config is not None:
        if not isinstance(config, str):
            ev.err(codes.DIFFUSERS_BAD_CONFIG, f"config= is the path of a diffusers pipeline folder, found "
                                               f"{a_type(config)}", span)
            return None
        p = Path(config).expanduser()
        p = (p if p.is_absolute() else ev.module_dir() / p).resolve()
        index = read_model_index(str(p))
        cls = index.get("_class_name")
        if not index:
            ev.err(codes.DIFFUSERS_BAD_CONFIG, f"`{config}` is not a diffusers pipeline folder (no readable "
                                               f"model_index.json)", span)
            return None
        from ..sources.diffusers import pipeline_arch

        their = pipeline_arch(index, str(p))
        if their != arch:
            ev.err(codes.DIFFUSERS_BAD_CONFIG, f"`{config}` is a {cls} pipeline ({their or 'unknown'}), the model is "
                                               f"`{arch}`", span, help=f"give a {arch} pipeline's folder")
            return None
        return str(p), cls
    for n in node.walk():
        src = n.load.header if n.load is not None else None
        if getattr(src, "kind", None) == "diffusers" and os.path.isfile(os.path.join(src.path, "model_index.json")):
            from ..sources.diffusers import pipeline_arch

            index = read_model_index(src.path)
            if pipeline_arch(index, src.path) == arch:
                return src.path, str(index.get("_class_name"))
    ev.err(codes.DIFFUSERS_NEEDS_CONFIG, "a diffusers folder needs its pipeline's configs (model_index.json, "
                                         "component configs, tokenizers, scheduler), and no input is a "
                                         f"{arch} pipeline folder to copy them from", span,
           help=f'name one: as diffusers(config="path/to/{arch}-pipeline/")')
    return None


def _components(node, arch: str) -> list[str]:
    from ..archs import diffusers_map as dm

    out = []
    for c in dm.layout(arch).components:
        if any(k.startswith(c.checkpoint) or k.startswith(c.folder + "/") for k in node.keys):
            out.append(c.folder)
    return out


def _shown(folder: str) -> str:
    return os.path.basename(folder.rstrip(os.sep)) + "/"
