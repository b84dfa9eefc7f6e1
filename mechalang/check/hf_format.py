"""`export m to "out/" as hf(shard_size="5GB", dtype="bf16")`: checking the Hugging Face folder
format's options and its value (graph/hf_export.py plans it)."""

from __future__ import annotations

from typing import Any

from ..diagnostics import codes, did_you_mean, warning
from ..dtypes import EXPORT_DTYPES
from ..graph.hf_export import HfFormat, first_hf_source
from ..syntax import ast
from ..units import parse_size
from .values import POISON, ModelValue, a_type

OPTIONS = ("shard_size", "dtype")


def hf_export(ev, stmt, value: Any, env) -> tuple[Any, HfFormat | None]:
    call = stmt.format
    ok = True
    opts: dict[str, Any] = {}
    for arg in call.args if call is not None else ():
        ev.err(codes.WRONG_ARGUMENT_COUNT, "`as hf(...)` takes its options by name", arg.span,
               help='as hf(shard_size="5GB")')
        ok = False
    for kw in call.kwargs if call is not None else ():
        if kw.name not in OPTIONS:
            sugg = did_you_mean(kw.name, list(OPTIONS))
            ev.err(codes.NO_SUCH_KEYWORD, f"`as hf(...)` has no option `{kw.name}`", kw.name_span or kw.span,
                   help=f"did you mean `{sugg}`?" if sugg else "options: " + ", ".join(OPTIONS))
            ok = False
            continue
        if kw.name == "dtype" and isinstance(kw.value, ast.HyperMap):
            continue  # per-key dtypes: checked with the export (evaluate.folder_dtype_map)
        opts[kw.name] = (ev.eval(kw.value, env), kw.value.span)
    shard = None
    if "shard_size" in opts:
        v, span = opts["shard_size"]
        shard = parse_size(v) if v is not POISON else None
        if shard is None and v is not POISON:
            ev.err(codes.BAD_SHARD_SIZE, f"shard_size= must be a size such as \"5GB\" or \"500MiB\", found {v!r}",
                   span)
            ok = False
    dtype = None
    if "dtype" in opts:
        dtype, span = opts["dtype"]
        if dtype not in EXPORT_DTYPES:
            ev.err(codes.UNKNOWN_OUTPUT_DTYPE, f"unknown output dtype {dtype!r}", span,
                   help=f"use one of {', '.join(EXPORT_DTYPES)}")
            ok = False
    if value is POISON:
        return None, None
    if not isinstance(value, ModelValue) or value.node.space != "weight":
        what = value.node.type_name if isinstance(value, ModelValue) else a_type(value)
        ev.err(codes.EXPORT_NOT_MODEL, f"a Hugging Face folder holds a Model, found {what}", stmt.value.span)
        return None, None
    if not ok:
        return None, None
    if first_hf_source(value.node) is None and not any(n.load is not None and n.load.deferred
                                                       for n in value.node.walk()):
        ev.report(warning(codes.NO_CONFIG_TO_COPY, "no input of this export is a Hugging Face folder: the "
                                                   "output will have weights but no config.json",
                          stmt.span, label="written as a Hugging Face folder",
                          help="copy a config.json into the folder, or merge Hugging Face folders"))
    return value.node, HfFormat(shard, dtype)
