"""Lowering `export DELTA to "x.safetensors" as lora(rank=…, dialect=…)`: the delta of every weight
becomes LoRA factors under the dialect's module names (archs/keymap.py).

Per key: when the delta is a sum of scaled LoRA groups (`0.5 * lora(a) + lora(b)`), the factors are
concatenated, exactly (ranks add; α is set to the total rank so the scale is 1 and each group's
own α/r and strength are folded into its up factor). Otherwise the delta is factored by a
truncated SVD at `rank` (capped by the key's dimensions). Keys that are not matrices or
convolution kernels (biases, norms), or are no module's weight (EMA copies), have no LoRA form:
they are left out, and `pipeline.plan` reports them (W0276).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from ..dtypes import EXPORT_DTYPES, FLOAT_DTYPES
from ..kinds.export import CONCAT_OP, CONST_OP, PART_OP, SVD_OP
from ..runtime.plan import Op, OutputPlan, layout
from .nodes import Node

# kohya and LyCORIS (a LoCon) share the tensor names; they differ in the network module recorded.
DIALECTS = ("kohya", "lycoris", "peft")
PEFT_PREFIX = "base_model.model."


@dataclass(frozen=True)
class LoraFormat:
    rank: int | None = None  # None: only exact concatenations are allowed
    dialect: str = "kohya"
    dtype: str | None = None  # output dtype name (fp16, bf16, fp32); None: the delta's
    clamp: float | None = None  # quantile clamp of the SVD factors (kohya's extractor: 0.99)
    dynamic: tuple[str, float] | None = None  # ("sv_ratio" | "sv_fro" | "sv_cumulative", value), rank the cap


def low_rank_shape(shape: tuple[int, ...]) -> bool:
    return len(shape) in (2, 4)


def terms(node: Node, key: str, resolve) -> list[tuple[float, Node, Any]] | None:
    """The key's delta as Σ c_i · (a plain LoRA group), or None when it is anything else.
    `resolve(node, key)` gives a `scale` node's factor for the key."""
    out: list[tuple[float, Node, Any]] = []
    stack = [(node, 1.0)]
    while stack:
        n, c = stack.pop()
        if key not in n.keys:
            continue
        if n.op == "adapter":
            pieces = n.load.adapter.pieces(key)
            if len(pieces) != 1 or pieces[0].kind != "lora" or pieces[0].rows is not None:
                return None
            parts = dict(pieces[0].parts)
            if "mid" in parts or "magnitude" in parts or dict(pieces[0].params).get("fan_in_fan_out"):
                return None
            out.append((c, n, pieces[0]))
        elif n.op == "scale":
            stack.append((n.args[0], c * float(resolve(n, key))))
        elif n.op == "add" and all(a.space == "delta" for a in n.args):
            stack.extend((a, c) for a in reversed(n.args))
        elif n.op == "sub" and all(a.space == "delta" for a in n.args):  # a − b = a + (−1)·b
            stack.extend([(n.args[1], -c), (n.args[0], c)])
        else:
            return None
    return out or None


def module_names(arch, key: str, dialect: str, keys: dict) -> list[tuple[str, tuple[int, int] | None]]:
    """The output module name(s) for a weight: the dialect's, else (a model the keymap does not name
    in that dialect, such as an LLM in kohya's) its own module path."""
    from ..archs.keymap import module_path, module_pieces

    native = module_path(key)
    if native is None:  # not a module's weight (EMA copies, embeddings stored as parameters)
        return []
    if dialect == "peft":
        return [(PEFT_PREFIX + native, None)]
    pieces = module_pieces(arch.name, key, "kohya", keys)
    return pieces or [(native, None)]


def plan_output(lowerer, ex, path: str, fmt: LoraFormat) -> tuple[OutputPlan, list[str]]:
    """The output plan of a LoRA export, and the keys left out (no low-rank form)."""
    root: Node = ex.node
    shapes = {k: m.shape for k, m in root.keys.items()}
    entries: list[tuple] = []
    skipped: list[str] = []
    memo: dict = {}
    ranks: dict[str, int] = {}
    targets = []
    for key, meta in root.keys.items():
        if not low_rank_shape(meta.shape) or meta.dtype not in FLOAT_DTYPES:
            skipped.append(key)
            continue
        dtype = EXPORT_DTYPES[fmt.dtype] if fmt.dtype else meta.dtype
        found = terms(root, key, lambda n, k: lowerer.resolve(n, "factor", n.hyper("factor"), k, None))
        if found is not None and fmt.rank is not None and sum(p.rank for _, _, p in found) > fmt.rank:
            found = None  # resizing: a sum of LoRAs above the rank asked for is factored again
        named = module_names(root.arch, key, fmt.dialect, shapes)
        if not named:
            skipped.append(key)
            continue
        for module, rows in named:
            out = meta.shape[0] if rows is None else rows[1] - rows[0]
            rest = tuple(meta.shape[1:])
            if found is not None and rows is None:
                rank = sum(p.rank for _, _, p in found)
                up_shape, down_shape = _factor_shapes(out, rest, rank)
                args, spec = [], []
                for c, n, piece in found:
                    parts = dict(piece.parts)
                    idx = lowerer.input_index[n.id]
                    for part in ("up", "down", "alpha"):
                        if part in parts:
                            args.append(_read(idx, n, parts[part]))
                    params = dict(piece.params)
                    spec.append((c, piece.rank, "alpha" in parts, params.get("alpha"), bool(params.get("rslora"))))
                hyp = (("down_shape", down_shape), ("terms", tuple(spec)), ("up_shape", up_shape))
                up = _op(CONCAT_OP, tuple(args), hyp + (("part", "up"),))
                down = _op(CONCAT_OP, tuple(args), hyp + (("part", "down"),))
            else:
                if fmt.rank is None:
                    raise LoraExportError(key)
                delta = lowerer.expr(root, key, memo)
                if delta is None:
                    skipped.append(key)
                    continue
                rank = max(1, min(fmt.rank, out, _prod(rest)))
                up_shape, down_shape = _factor_shapes(out, rest, rank)
                svd = _op(SVD_OP, (delta,), (("clamp", fmt.clamp), ("dynamic", fmt.dynamic), ("rank", rank),
                                             ("rows", rows)))
                both = (("down_shape", down_shape), ("up_shape", up_shape))
                up = _op(PART_OP, (svd,), both + (("part", "up"),))
                down = _op(PART_OP, (svd,), both + (("part", "down"),))
            ranks[module] = rank
            targets.append(module)
            names = _tensor_names(module, fmt.dialect)
            entries.append((names["down"], down, dtype, down_shape, module))
            entries.append((names["up"], up, dtype, up_shape, module))
            if fmt.dialect != "peft":
                if fmt.dynamic is not None and found is None:  # the rank the SVD keeps: α, trimmed to
                    alpha = _op(PART_OP, (svd,), both + (("part", "alpha"),))
                else:
                    alpha = _op(CONST_OP, (), (("value", float(rank)),))
                entries.append((names["alpha"], alpha, dtype, (), module))
    metadata = dict(lowerer.metadata(ex, path))
    sidecars: tuple = ()
    top = max(ranks.values(), default=0)
    if fmt.dialect == "peft":
        sidecars = (("adapter_config.json", _peft_config(ranks, top)),)
    else:
        metadata.update({"ss_network_module": "lycoris.kohya" if fmt.dialect == "lycoris" else "networks.lora",
                         "ss_network_dim": str(top), "ss_network_alpha": str(top)})
        if fmt.dialect == "lycoris":
            metadata["ss_network_args"] = json.dumps({"algo": "locon", "conv_dim": str(top), "conv_alpha": str(top)})
    trim = fmt.dynamic is not None
    return OutputPlan(path, layout(entries), tuple(sorted(metadata.items())), sidecars, trim_lora=trim), skipped


class LoraExportError(Exception):
    """A key whose delta needs an SVD when the export gave no rank."""

    def __init__(self, key: str):
        self.key = key


def _prod(shape) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def _factor_shapes(out: int, rest: tuple[int, ...], rank: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    if len(rest) == 3:  # a convolution: a k×k down and a 1×1 up compose to it
        return (out, rank, 1, 1), (rank,) + rest
    return (out, rank), (rank,) + rest


def _tensor_names(module: str, dialect: str) -> dict[str, str]:
    if dialect == "peft":
        return {"up": module + ".lora_B.weight", "down": module + ".lora_A.weight"}
    return {"up": module + ".lora_up.weight", "down": module + ".lora_down.weight", "alpha": module + ".alpha"}


def _read(idx: int, n: Node, name: str):
    from .source_reads import source_expr

    return source_expr(idx, n.load.header.tensors[name])


def _op(op: str, args: tuple, hypers: tuple) -> Op:
    return Op(op, args, tuple(sorted(hypers)))


def _peft_config(ranks: dict[str, int], top: int) -> str:
    """PEFT's adapter_config.json for the modules written: r and lora_alpha equal (scale 1), a
    rank_pattern for modules of another rank."""
    bare = {m[len(PEFT_PREFIX):]: r for m, r in ranks.items()}
    targets = sorted({m.rsplit(".", 1)[-1] for m in bare})
    pattern = {m: r for m, r in bare.items() if r != top}
    config = {"peft_type": "LORA", "task_type": None, "r": top, "lora_alpha": top, "target_modules": targets,
              "rank_pattern": pattern, "alpha_pattern": dict(pattern), "lora_dropout": 0.0, "bias": "none",
              "fan_in_fan_out": False, "use_rslora": False, "use_dora": False, "inference_mode": True,
              "base_model_name_or_path": None}
    return json.dumps(config, indent=2) + "\n"
