"""Lowering `export m to "out/" as diffusers(...)`: one safetensors file per pipeline component,
in diffusers names (archs/diffusers_map.py), inside a folder output that also receives every other
file of the config pipeline (runtime/plan.py `FolderOutput`).

Every key is computed exactly as a single-file export computes it, in the single-file layout: a
method that looks at a whole tensor (TIES' top-k, a norm) sees the fused `in_proj_weight` or
`linear1`, never its pieces. A key stored in pieces is one job (`OutTensor.group` = the key): its
value is computed once and each piece is a row slice of it (`source.rows`); a key stored in
another form is reshaped, transposed or has its halves swapped on the way out.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from ..archs import diffusers_map as dm
from ..runtime.plan import FolderOutput, Op, OutputPlan, layout
from ..sources.diffusers import read_model_index
from .nodes import Node

ROWS_OP = "source.rows"


@dataclass(frozen=True)
class DiffusersFormat:
    """`as diffusers(...)`, checked (check/diffusers_format.py)."""

    arch: str                       # the architecture whose layout is written
    config: str                     # the pipeline folder the other files are copied from (absolute)
    dtype: str | None = None        # an EXPORT_DTYPES name for float tensors; None: as computed
    variant: str | None = None      # weight files named `<stem>.<variant>.safetensors`
    copied: tuple[str, ...] = ()    # component folders copied whole from `config`
    left_out: tuple[str, ...] = ()  # component folders the config pipeline does not have


def plan_output(lowerer, ex, folder: str) -> tuple[list[OutputPlan], FolderOutput, list[str]]:
    """The files of a diffusers export, its folder, and the keys left out (no place in it)."""
    from ..sources.diffusers import STEMS, weights_file

    fmt = ex.format
    root: Node = ex.node
    shapes = {k: m.shape for k, m in root.keys.items() if "/" not in k}
    out = dm.output_layout(fmt.arch, shapes)
    comps = {c.folder: c for c in dm.layout(fmt.arch).components}
    per_folder: dict[str, list[tuple]] = {}
    left: list[str] = list(out.left_out)
    memo: dict = {}

    def dtype_of(key: str, dtype: str) -> str:
        return lowerer.out_dtype(ex, key, dtype, fmt.dtype)

    for key, meta in root.keys.items():
        if "/" in key:  # a tensor kept under its folder's name by the diffusers source
            f, name = key.split("/", 1)
            if f not in comps or f in fmt.left_out:
                left.append(key)
                continue
            if f in fmt.copied:
                continue
            expr = lowerer.expr(root, key, memo)
            if expr is not None:
                per_folder.setdefault(f, []).append((name, expr, dtype_of(key, meta.dtype), meta.shape))
            continue
        p = out.placements.get(key)
        if p is None or p.folder in fmt.copied:
            continue
        if p.folder in fmt.left_out:
            left.append(key)
            continue
        expr = lowerer.expr(root, key, memo)
        if expr is None:
            left.append(key)
            continue
        dtype = dtype_of(key, meta.dtype)
        entries = per_folder.setdefault(p.folder, [])
        shape = tuple(meta.shape)
        if p.fused:
            for (name, _), (a, b) in zip(p.pieces, out.rows[key]):
                piece = Op(ROWS_OP, (expr,), (("start", a), ("stop", b)))
                entries.append((name, piece, dtype, (b - a,) + shape[1:], key))
            continue
        name = p.pieces[0][0]
        if p.transform == "conv" and len(shape) == 4 and shape[2:] == (1, 1):
            entries.append((name, Op("source.reshape", (expr,), (("shape", shape[:2]),)), dtype, shape[:2]))
        elif p.transform == "transpose" and len(shape) == 2:
            entries.append((name, Op("source.transpose", (expr,)), dtype, (shape[1], shape[0])))
        elif p.transform == "swap" and shape and shape[0] % 2 == 0:
            h = shape[0] // 2
            halves = (Op(ROWS_OP, (expr,), (("start", h), ("stop", 2 * h))),
                      Op(ROWS_OP, (expr,), (("start", 0), ("stop", h))))
            entries.append((name, Op("source.cat", halves), dtype, shape))
        else:
            entries.append((name, expr, dtype, shape))
    metadata = dict(lowerer.metadata(ex, folder))
    metadata["format"] = "pt"  # transformers refuses safetensors files without it
    plans = []
    for f in comps:  # the layout's order: unet/transformer, vae, text encoders
        entries = per_folder.get(f)
        if not entries:
            continue
        found = weights_file(os.path.join(fmt.config, f))
        stem = found[0].split(".", 1)[0] if found else (STEMS[1] if comps[f].cls.startswith(("CLIP", "T5")) else STEMS[0])
        name = stem + (f".{fmt.variant}" if fmt.variant else "") + ".safetensors"
        path = os.path.join(folder, f, name)
        plans.append(OutputPlan(path, layout(entries), tuple(sorted(metadata.items())), folder=folder))
    return plans, FolderOutput(folder, copies=_copies(fmt)), left



def _copies(fmt) -> tuple[tuple[str, str], ...]:
    """The config pipeline's other files, and the whole folders of the components copied: those the
    model lacks, and those no merge touches (a safety checker) that model_index.json lists."""
    from ..sources.diffusers import EXTRAS, other_files

    index = read_model_index(fmt.config)
    extras = [c for c in EXTRAS if isinstance(index.get(c), list) and index[c] and index[c][0]
              and os.path.isdir(os.path.join(fmt.config, c))]
    whole = (*fmt.copied, *extras)
    out = [(os.path.join(fmt.config, rel), rel) for rel in other_files(fmt.config)
           if rel.split(os.sep, 1)[0] not in whole]
    for comp in whole:
        base = os.path.join(fmt.config, comp)
        for dirpath, dirs, names in os.walk(base):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for n in sorted(names):
                if not n.startswith("."):
                    src = os.path.join(dirpath, n)
                    out.append((src, os.path.relpath(src, fmt.config)))
    return tuple(out)
