"""Writing deltas as LoRA factors (`export … as lora(…)`): the engine's side.

Two ways, chosen per key by lowering (graph/lora_export.py):

- **concatenation**, exact, when the key's delta is a sum of scaled LoRA groups c_i·(α_i/r_i)·U_i·D_i:
  U = [c_1·(α_1/r_1)·U_1 | c_2·(α_2/r_2)·U_2 | …], D = [D_1; D_2; …], α = Σ r_i (so the scale is 1);
- **SVD** of the delta (a row slice of it, for fused keys): U·diag(S) truncated to the rank as up,
  Vᵀ as down, α = rank. Factor entries may be clamped at a quantile, as kohya's extractor does
  (`clamp=0.99`). A *dynamic* rank (kohya's resize rules: `sv_ratio`, `sv_fro`, `sv_cumulative`)
  is chosen per key from the singular values, at most `rank`: the factors are planned at `rank`,
  the components past the chosen rank are zeroed, α carries the chosen rank, and the writer trims
  every module to its α before the file appears (runtime/trim.py).

Each op returns one factor; the up and down of one module are planned as one job (their SVD is one
shared sub-expression, computed once).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

from ..methods._lazy import torch

SVD_OP = "lora_svd"  # (delta) -> [up.flatten(), down.flatten()] concatenated
PART_OP = "lora_part"  # (svd) -> up or down, reshaped
CONCAT_OP = "lora_concat"  # (up_1, down_1[, alpha_1], …) -> up or down
CONST_OP = "lora_const"  # () -> a scalar (the α written)
OPS = (SVD_OP, PART_OP, CONCAT_OP, CONST_OP)


def svd_factors(delta, hypers: dict[str, Any]):
    """Both factors of a delta's truncated SVD, flattened and concatenated (one tensor, so the up
    and down outputs share it)."""
    rows = hypers.get("rows")
    if rows is not None:
        delta = delta[rows[0]:rows[1]]
    out = delta.shape[0]
    mat = delta.reshape(out, -1)
    rank = hypers["rank"]
    dynamic = hypers.get("dynamic")
    if mat.dtype == torch.float32 and rank < min(mat.shape) and dynamic is None:
        u, vh = _top_singular(mat, rank)
    else:
        u, s, vh = torch.linalg.svd(mat, full_matrices=False)
        keep = rank if dynamic is None else dynamic_rank(s, dynamic, rank)
        u = u[:, :rank] * s[:rank]
        vh = vh[:rank]
        if keep < rank:  # zeroed here, trimmed by the writer
            u[:, keep:] = 0
            vh[keep:] = 0
        rank = keep
    clamp = hypers.get("clamp")
    if clamp is not None and clamp < 1:
        values = torch.cat([u.flatten(), vh.flatten()])
        # torch.quantile takes at most 2^24 values: larger factors are sampled by their first 16 Mi
        hi = torch.quantile(values.abs().float()[: 1 << 24], clamp).to(u.dtype)
        u, vh = u.clamp(-hi, hi), vh.clamp(-hi, hi)
    return torch.cat([u.flatten(), vh.flatten(), torch.tensor([float(rank)], dtype=u.dtype, device=u.device)])


def dynamic_rank(s, rule: tuple[str, float], cap: int) -> int:
    """How many singular values (sorted, largest first) a resize rule keeps, between 1 and `cap`:
    sv_ratio: those within a factor `v` of the largest; sv_fro: the fewest that keep a fraction `v`
    of the Frobenius norm (√ of their squares' share); sv_cumulative: the fewest whose sum is a
    fraction `v` of the sum (kohya's resize_lora rules)."""
    kind, v = rule
    s = s.double()
    if s.numel() == 0 or float(s[0]) == 0:
        return 1
    if kind == "sv_ratio":
        n = int((s >= s[0] / v).sum())
    elif kind == "sv_fro":
        share = (s.square().cumsum(0) / s.square().sum()).sqrt()
        n = int((share < v).sum()) + 1
    else:
        share = s.cumsum(0) / s.sum()
        n = int((share < v).sum()) + 1
    return max(1, min(n, cap, s.numel()))


def _top_singular(mat, rank: int):
    """The leading `rank` singular triplets of an fp32 matrix M, as (U·S, Vᵀ), from the eigenvectors
    of its Gram matrix on the short side, in float64: the factors a full SVD gives (to fp32 rounding),
    5-10× faster when the rank is well below the dimensions (a full SVD computes every triplet).

    Wide M (rows <= cols): M·Mᵀ = U·S²·Uᵀ, then Vᵀ = S⁻¹·Uᵀ·M (components below 1e-7 of the largest,
    noise a full SVD would also return, are zeroed rather than divided by). Tall M: Mᵀ·M = V·S²·Vᵀ,
    then U·S = M·V, with no division."""
    m = mat.double()
    if m.shape[0] > m.shape[1]:
        values, vectors = torch.linalg.eigh(m.T @ m)
        v = vectors[:, torch.argsort(values, descending=True)[:rank]]
        return (m @ v).float(), v.T.float()
    values, vectors = torch.linalg.eigh(m @ m.T)
    order = torch.argsort(values, descending=True)[:rank]
    s = values[order].clamp_min(0).sqrt()
    u = vectors[:, order]
    keep = s > s[:1] * 1e-7
    inv = torch.where(keep, 1 / torch.where(keep, s, torch.ones_like(s)), torch.zeros_like(s))
    return (u * (s * keep)).float(), ((u.T @ m) * inv[:, None]).float()


def svd_part(flat, hypers: dict[str, Any]):
    up_shape, down_shape = tuple(hypers["up_shape"]), tuple(hypers["down_shape"])
    n_up, n_down = math.prod(up_shape), math.prod(down_shape)
    if hypers["part"] == "up":
        return flat[:n_up].reshape(up_shape)
    if hypers["part"] == "alpha":  # the rank the factorization kept
        return flat[n_up + n_down].reshape(())
    return flat[n_up:n_up + n_down].reshape(down_shape)


def concat(args: Sequence[Any], hypers: dict[str, Any]):
    """One factor of the exact concatenation of several LoRA groups."""
    part = hypers["part"]
    up_shape, down_shape = tuple(hypers["up_shape"]), tuple(hypers["down_shape"])
    pieces = []
    pos = 0
    for coef, rank, has_alpha, alpha, rslora in hypers["terms"]:
        up, down = args[pos], args[pos + 1]
        a = args[pos + 2] if has_alpha else None
        pos += 3 if has_alpha else 2
        if part == "down":
            pieces.append(down.reshape((rank,) + down_shape[1:]))
            continue
        if a is not None:
            alpha = float(a.reshape(-1)[0])
        if alpha is None or alpha == 0:
            alpha = float(rank)
        scale = coef * alpha / (math.sqrt(rank) if rslora else rank)
        pieces.append(up.reshape((up_shape[0], rank) + up_shape[2:]) * scale)
    return torch.cat(pieces, dim=0 if part == "down" else 1)


def evaluate(op: str, args: Sequence[Any], hypers: dict[str, Any]):
    if op == SVD_OP:
        return svd_factors(args[0], hypers)
    if op == PART_OP:
        return svd_part(args[0], hypers)
    if op == CONST_OP:
        return torch.tensor(hypers["value"])
    return concat(args, hypers)
