"""`export DELTA to "x.safetensors" as lora(rank=32, dialect="kohya", dtype="fp16", clamp=0.99)`:
checking the format's options and that the value can be written as LoRA factors."""

from __future__ import annotations

from typing import Any

from ..diagnostics import codes, did_you_mean
from ..dtypes import EXPORT_DTYPES
from ..graph.lora_export import DIALECTS, LoraFormat, low_rank_shape, terms
from .values import POISON, ModelValue, a_type

OPTIONS = ("rank", "dialect", "dtype", "clamp", "sv_ratio", "sv_fro", "sv_cumulative")
DYNAMIC = ("sv_ratio", "sv_fro", "sv_cumulative")


def lora_export(ev, stmt, value: Any, env) -> tuple[Any, LoraFormat | None]:
    call = stmt.format
    opts: dict[str, Any] = {}
    ok = True
    for arg in call.args if call is not None else ():
        ev.err(codes.WRONG_ARGUMENT_COUNT, "`as lora(...)` takes its options by name", arg.span,
               help="as lora(rank=32)")
        ok = False
    for kw in call.kwargs if call is not None else ():
        if kw.name not in OPTIONS:
            sugg = did_you_mean(kw.name, list(OPTIONS))
            ev.err(codes.NO_SUCH_KEYWORD, f"`as lora(...)` has no option `{kw.name}`", kw.name_span or kw.span,
                   help=f"did you mean `{sugg}`?" if sugg else "options: " + ", ".join(OPTIONS))
            ok = False
            continue
        opts[kw.name] = (ev.eval(kw.value, env), kw.value.span)
    fmt = LoraFormat()
    rank, span = opts.get("rank", (None, None))
    if rank is not None:
        if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
            ev.err(codes.HYPER_OUT_OF_RANGE, f"rank= must be a whole number ≥ 1, found {rank!r}", span)
            ok = False
        else:
            fmt = LoraFormat(rank=rank)
    dialect, span = opts.get("dialect", ("kohya", None))
    if dialect not in DIALECTS:
        ev.err(codes.HYPER_OUT_OF_RANGE, f"dialect= must be one of {', '.join(DIALECTS)}, found {dialect!r}", span)
        ok = False
    dtype, span = opts.get("dtype", (None, None))
    if dtype is not None and dtype not in EXPORT_DTYPES:
        ev.err(codes.UNKNOWN_OUTPUT_DTYPE, f"unknown output dtype {dtype!r}", span,
               help=f"use one of {', '.join(EXPORT_DTYPES)}")
        ok = False
    clamp, span = opts.get("clamp", (None, None))
    if clamp is not None and (isinstance(clamp, bool) or not isinstance(clamp, (int, float)) or not 0 < clamp <= 1):
        ev.err(codes.HYPER_OUT_OF_RANGE, f"clamp= is a quantile in (0, 1], found {clamp!r}", span)
        ok = False
    dynamic = None
    chosen = [k for k in DYNAMIC if k in opts]
    if len(chosen) > 1:
        ev.err(codes.HYPER_OUT_OF_RANGE, f"give one dynamic-rank rule, not {' and '.join(chosen)}", opts[chosen[1]][1])
        ok = False
    elif chosen:
        v, span = opts[chosen[0]]
        bad = isinstance(v, bool) or not isinstance(v, (int, float)) or \
            (v < 1 if chosen[0] == "sv_ratio" else not 0 < v <= 1)
        if bad:
            ev.err(codes.HYPER_OUT_OF_RANGE, f"{chosen[0]}= must be " + ("a ratio ≥ 1" if chosen[0] == "sv_ratio"
                                                                          else "a fraction in (0, 1]")
                   + f", found {v!r}", span)
            ok = False
        elif fmt.rank is None:
            ev.err(codes.MISSING_HYPERPARAMETER, f"{chosen[0]}= chooses each key's rank up to a largest: give it "
                                                 "with rank=", span, help=f"as lora(rank=64, {chosen[0]}={v})")
            ok = False
        elif dialect == "peft":
            ev.err(codes.HYPER_OUT_OF_RANGE, f"{chosen[0]}= writes kohya or LyCORIS files (a PEFT config holds "
                                             "one rank per pattern)", span)
            ok = False
        else:
            dynamic = (chosen[0], float(v))
    if value is POISON:
        return None, None
    if not isinstance(value, ModelValue) or value.node.space != "delta":
        what = value.node.type_name if isinstance(value, ModelValue) else a_type(value)
        ev.err(codes.EXPORT_NOT_MODEL, f"a LoRA export needs a Delta, found {what}", stmt.value.span,
               help="export the difference: `tuned - base as lora(rank=64)`, or an adapter: `lora(\"x\") as lora()`")
        return None, None
    if not ok:
        return None, None
    fmt = LoraFormat(fmt.rank, dialect, dtype, float(clamp) if clamp is not None else None, dynamic)
    if fmt.rank is None:
        node = value.node
        needs_svd = [k for k, m in node.keys.items()
                     if low_rank_shape(m.shape) and terms(node, k, lambda n, k: 1) is None]
        if needs_svd:
            shown = ", ".join(f"`{k}`" for k in needs_svd[:3]) + (f" and {len(needs_svd) - 3} more"
                                                                   if len(needs_svd) > 3 else "")
            many = len(needs_svd) != 1
            ev.err(codes.MISSING_HYPERPARAMETER, f"{len(needs_svd)} key{'s' if many else ''} of this delta "
                   f"{'are' if many else 'is'} not a sum of LoRAs, so {'they' if many else 'it'} must be "
                   f"factored by SVD: {shown}", stmt.span, label="needs rank=",
                   help="give the rank to factor at: as lora(rank=32)")
            return None, None
    return value.node, fmt
