"""Spherical merge methods: slerp, nuslerp, multislerp and the Karcher mean.

These interpolate along great circles instead of straight lines, so the result keeps the inputs'
norms instead of shrinking towards the origin as a weighted sum of dissimilar vectors does. Unless
a method says otherwise, a tensor is treated as ONE flattened vector.

Merging around a base model, as mergekit's `base_model` option does for nuslerp and multislerp, is
written with deltas: `base + multislerp(a - base, b - base)` (every model parameter here is `Same`,
so it accepts deltas and returns a delta).
"""

import math

from ._lazy import torch
from ._reduce import dot64, norm64
from .linear import _down, _up
from .registry import Bool, Float, HyperKind, Int, Same, merge_method

# ------------------------------------------------------------------------------------------------
# A hyperparameter kind for per-model weights given as one string: "1, 2, 0.5".


class _NumberList(HyperKind):
    """A comma-separated list of numbers, one per model; empty for equal weights."""

    def describe(self) -> str:
        return "comma-separated numbers, one per model (empty: equal weights)"

    def check(self, value):
        if not isinstance(value, str):
            return f"expected a string of comma-separated numbers, got {value!r}"
        try:
            _parse_weights(value)
        except ValueError as e:
            return str(e)
        return None


def _parse_weights(text: str) -> list:
    if not text.strip():
        return []
    out = []
    for part in text.split(","):
        try:
            x = float(part)
        except ValueError:
            raise ValueError(f"{part.strip()!r} is not a number") from None
        if not math.isfinite(x):
            raise ValueError(f"weight {part.strip()!r} is not finite")
        out.append(x)
    return out


def _model_weights(text: str, n: int) -> list:
    weights = _parse_weights(text)
    if not weights:
        return [1.0] * n
    if len(weights) != n:
        raise ValueError(f"{len(weights)} weights given for {n} models")
    return weights


WeightList = _NumberList("str")

_BLOCK = 1 << 17  # elements per block of the final combinations (a cache-sized temporary)


def _combine2(a, s0, b, s1, div=None):
    """s0·a + s1·b (÷ div) for 1-d a and b: each product rounded, then their sum, then the
    quotient, exactly as the whole-tensor expression, but a block at a time into one output, so
    no full-size temporaries are allocated (and page-faulted) for a large tensor."""
    out = torch.empty_like(a)
    for lo in range(0, a.numel(), _BLOCK):
        o = out[lo:lo + _BLOCK]
        torch.mul(a[lo:lo + _BLOCK], s0, out=o)
        o.add_(torch.mul(b[lo:lo + _BLOCK], s1))
        if div is not None:
            o.div_(div)
    return out


# ------------------------------------------------------------------------------------------------


@merge_method(formula="sin((1 − α)Ω)/sin Ω · a + sin(αΩ)/sin Ω · b,  cos Ω = â·b̂", family="spherical")
def slerp(a: Same, b: Same, *, alpha: Float(0.0, 1.0) = 0.5,
          epsilon: Float(0.0, None, lo_open=True) = 1e-8,
          dot_threshold: Float(0.0, 1.0) = 0.9995) -> Same:
    """Spherical linear interpolation of the flattened tensors, mergekit's `slerp`.

    Ω is the angle between a and b (each normalized when its norm exceeds `epsilon`);
    the result is sin((1 − α)Ω)/sin Ω · a + sin(αΩ)/sin Ω · b, applied to the *unnormalized*
    tensors as mergekit does. When |cos Ω| > `dot_threshold` (nearly parallel or antiparallel
    tensors) it falls back to the weighted sum (1 − α)·a + α·b, as mergekit does.

    α is the weight of `b` (mergekit calls it `t`). sd-mecha's `slerp` differs for tensors of
    unequal norms: it interpolates the unit vectors and rescales the result to (1 − α)|a| + α|b|.
    """
    (a_w, b_w), dtype = _up(a, b)
    t = float(alpha)
    if a.numel() == 0:
        return _down(torch.lerp(a_w, b_w, t), dtype)
    eps = float(epsilon)
    na, nb = float(norm64(a_w)), float(norm64(b_w))  # whole-tensor reductions in float64
    dot = float(dot64(a_w, b_w)) / ((na if na > eps else 1.0) * (nb if nb > eps else 1.0))
    dot = min(1.0, max(-1.0, dot))
    if abs(dot) > float(dot_threshold):
        return _down(torch.lerp(a_w, b_w, t), dtype)
    omega = math.acos(dot)
    sin_omega = math.sin(omega)
    s0 = math.sin((1.0 - t) * omega) / sin_omega
    s1 = math.sin(t * omega) / sin_omega
    return _down(_combine2(a_w.reshape(-1), s0, b_w.reshape(-1), s1).reshape(a.shape), dtype)


def _nuslerp_vectors(t: float, v0, v1, eps: float):
    """Slerp each row (last dimension) of v0 to the same row of v1 (one whole vector when they
    are 1-d: then the norms and the dot product are accumulated in float64)."""
    def unit(x):
        return x / torch.linalg.vector_norm(x, dim=-1, keepdim=True).clamp(min=1e-7)

    if v0.dim() == 1:
        n0, n1 = float(norm64(v0)), float(norm64(v1))
        c = float(dot64(v0, v1)) / (max(n0, 1e-7) * max(n1, 1e-7))
        cos = torch.tensor(min(1.0, max(-1.0, c)), dtype=v0.dtype)
    else:
        cos = torch.sum(unit(v0) * unit(v1), dim=-1, keepdim=True).clamp(-1.0, 1.0)
    theta = torch.acos(cos)
    # sin(acos(c)) as sqrt(1 − c²): exactly 0 for (anti)parallel vectors, where float32's
    # sin(acos(−1)) = sin(π) ≈ −8.7e-8 would not count as colinear and blow the result up
    sin_theta = torch.sqrt((1.0 - cos * cos).clamp(min=0.0))
    colinear = sin_theta.abs() < eps
    if v0.dim() == 1:  # one angle: the coefficients are scalars (in the working dtype)
        if bool(colinear):
            return torch.lerp(v0, v1, t)
        return _combine2(v0.contiguous(), torch.sin((1.0 - t) * theta), v1.contiguous(), torch.sin(t * theta),
                         sin_theta)
    safe_sin = torch.where(colinear, torch.ones_like(sin_theta), sin_theta)
    spherical = (torch.sin((1.0 - t) * theta) * v0 + torch.sin(t * theta) * v1) / safe_sin
    return torch.where(colinear, torch.lerp(v0, v1, t), spherical)


@merge_method(formula="slerp(a, b, t) per row or over the whole tensor,  t = w_b / (w_a + w_b)",
              family="spherical")
def nuslerp(a: Same, b: Same, *, weight_a: Float() = 1.0, weight_b: Float() = 1.0,
            flatten: Bool() = True, row_wise: Bool() = False,
            epsilon: Float(0.0, None, lo_open=True) = 1e-8) -> Same:
    """mergekit's `nuslerp`: slerp with t = weight_b / (weight_a + weight_b).

    The weights are relative (mergekit's per-model `weight`); when they sum to ~0 (|Σ| < 1e-6),
    t = 0.5 as in mergekit. With `flatten` (mergekit's default, `nuslerp_flatten`) the whole tensor
    is one vector; without it each vector along the last dimension is slerped separately, or each
    vector along the first dimension with `row_wise` (mergekit's `nuslerp_row_wise`, which
    transposes dimension 0 to the end). Vectors whose angle has |sin θ| < `epsilon` are lerped.
    Unlike `slerp` there is no parallelism threshold beyond that. mergekit's base model is written
    `base + nuslerp(a - base, b - base, ...)`.
    """
    (a_w, b_w), dtype = _up(a, b)
    wa, wb = float(weight_a), float(weight_b)
    t = 0.5 if abs(wa + wb) < 1e-6 else wb / (wa + wb)
    if a.numel() == 0:
        return _down(torch.lerp(a_w, b_w, t), dtype)
    shape = a.shape
    if flatten or a.dim() <= 1:
        res = _nuslerp_vectors(t, a_w.reshape(-1), b_w.reshape(-1), float(epsilon))
    elif row_wise:
        res = _nuslerp_vectors(t, a_w.transpose(0, -1), b_w.transpose(0, -1), float(epsilon))
        res = res.transpose(0, -1)
    else:
        res = _nuslerp_vectors(t, a_w, b_w, float(epsilon))
    return _down(res.reshape(shape), dtype)


@merge_method(formula="exp_μ(Σ wᵢ·P_μ(m̂ᵢ)) · Σ wᵢ|mᵢ|,  μ = normalized Σ wᵢ m̂ᵢ",
              family="spherical", min_models=1)
def multislerp(*models: Same, weights: WeightList = "", normalize_weights: Bool() = True,
               epsilon: Float(0.0, None, lo_open=True) = 1e-8) -> Same:
    """mergekit's `multislerp`: barycentric interpolation of several tensors on a hypersphere.

    Each flattened tensor mᵢ is projected onto the unit sphere (m̂ᵢ = mᵢ / (|mᵢ| + ε)); μ is their
    weighted mean direction; the m̂ᵢ are projected onto the tangent plane at μ
    (P_μ(x) = x − (x·μ)μ), averaged with the weights, mapped back to the sphere with the
    exponential map, and scaled by the weighted mean norm Σ wᵢ|mᵢ|.

    `weights` lists one weight per model ("1, 2, 1"; empty: equal), normalized to sum 1 when
    `normalize_weights` (mergekit's names). A base model (mergekit's `base_model`) is written
    `base + multislerp(a - base, b - base, ...)`.

    Compared with peers: when the weighted mean direction vanishes (antipodal inputs with balanced
    weights) the result is the weighted sum Σ wᵢmᵢ; mergekit does that for two models and raises an
    error for more.
    """
    w = _model_weights(weights, len(models))
    if len(models) == 1:
        return models[0]
    rows, dtype = _up(*models)
    shape = models[0].shape
    rows = [r.reshape(-1) for r in rows]
    if normalize_weights:
        total = sum(w)
        if abs(total) < 1e-12:
            raise ValueError("multislerp: the weights sum to zero and cannot be normalized")
        w = [x / total for x in w]
    eps = float(epsilon)
    work = rows[0].dtype

    def weighted_sum():
        out = torch.zeros_like(rows[0])
        for wi, r in zip(w, rows):
            out.add_(r, alpha=wi)
        return _down(out.reshape(shape), dtype)

    if rows[0].numel() == 0:
        return weighted_sum()
    norms = [float(norm64(r)) for r in rows]  # whole-tensor reductions, float64-accurate
    # M = Σ wᵢ·m̂ᵢ, model by model (no (n, N) stacks of units or tangents). Each wᵢ·m̂ᵢ is rounded
    # on its own before it is added (no fused multiply-add), so that antipodal inputs cancel exactly.
    mean = torch.zeros_like(rows[0])
    for wi, r, ni in zip(w, rows, norms):
        mean.add_(torch.div(r, float(torch.tensor(ni, dtype=work)) + eps).mul_(wi))
    mean_norm = float(norm64(mean))
    if mean_norm < eps:
        return weighted_sum()
    mean.div_(mean_norm)  # μ
    # The tangent step Σ wᵢ·P_μ(m̂ᵢ) = Σ wᵢm̂ᵢ − (Σ wᵢ m̂ᵢ·μ)·μ = M − |M|·μ is zero: μ is the direction
    # of M itself. So exp_μ(0) = μ, and the result is μ scaled by the weighted mean norm (mergekit
    # computes that zero vector out of rounding errors; its norm, ~1e-7, moves nothing a bfloat16
    # can hold).
    return _down(mean.mul_(sum(wi * ni for wi, ni in zip(w, norms))).reshape(shape), dtype)


@merge_method(formula="(Σ|mᵢ|/n) · argmin_μ Σ d(μ, m̂ᵢ)²  on the unit sphere", family="spherical",
              min_models=1)
def karcher_mean(*models: Same, max_iter: Int(1, None) = 10,
                 tol: Float(0.0, None, lo_open=True) = 1e-5) -> Same:
    """The Karcher (Riemannian) mean of the models' directions, scaled by their mean norm.

    mergekit's `karcher`: the flattened tensors are normalized; tensors with norm ≤ `tol` take
    no part in the direction. Starting from the normalized mean of the unit vectors, the mean μ is
    moved along the average log map Σ θᵢ/sin θᵢ · (m̂ᵢ − cos θᵢ·μ) / k (θᵢ the angle to m̂ᵢ, terms
    with θᵢ < `tol` skipped) for at most `max_iter` steps, stopping when that step is shorter than
    `tol`. The result is μ times the mean of all n norms (zero-norm tensors included, as in
    mergekit). All inputs of zero norm give zeros. The iterations run on the coefficients of μ
    in the unit vectors, with their Gram matrix in float64.
    """
    if len(models) == 1:
        return models[0]
    rows, dtype = _up(*models)
    shape = models[0].shape
    n = len(models)
    rows = [r.reshape(-1) for r in rows]
    tol_f = float(tol)
    # Every iterate μ is a combination Σ cᵢ·m̂ᵢ of the unit vectors (the start is their mean, and
    # each step adds a tangent that is itself such a combination), so the iterations run on the
    # coefficients c alone with the units' Gram matrix G: m̂ᵢ·μ = (G·c)ᵢ and |Σ τᵢ·m̂ᵢ|² = τᵀ·G·τ.
    # One pass over the tensors builds G (float64, exact to rounding), one more forms μ: not
    # k + 2 passes per iteration, and no rounding of μ to the working dtype between iterations.
    gram = _gram64(rows)
    norms = [math.sqrt(max(float(gram[i, i]), 0.0)) for i in range(n)]
    kept = [i for i in range(n) if norms[i] > tol_f]
    if rows[0].numel() == 0 or not kept:
        return _down(torch.zeros_like(rows[0]).reshape(shape), dtype)
    k = len(kept)
    G = [[float(gram[i, j]) / (norms[i] * norms[j]) for j in kept] for i in kept]  # the units' Gram

    def combined_norm(c):
        return math.sqrt(max(sum(c[i] * G[i][j] * c[j] for i in range(k) for j in range(k)), 0.0))

    c = [1.0 / k] * k
    mean_norm = combined_norm(c)
    c = [1.0] + [0.0] * (k - 1) if mean_norm < tol_f else [x / mean_norm for x in c]
    for _ in range(int(max_iter)):
        # tangent = Σ fᵢ·(m̂ᵢ − cos θᵢ·μ) / k = Σ (fᵢ/k)·m̂ᵢ − (Σ (fᵢ/k)·cos θᵢ)·μ,  fᵢ = θᵢ / sin θᵢ
        coef, along = [], 0.0
        for i in range(k):
            cos_i = min(1.0, max(-1.0, sum(G[i][j] * c[j] for j in range(k))))
            theta = math.acos(cos_i)
            f = theta / math.sin(theta) / k if theta >= tol_f else 0.0
            coef.append(f)
            along += f * cos_i
        tangent = [coef[i] - along * c[i] for i in range(k)]
        step = combined_norm(tangent)
        if step < tol_f:
            break
        c = [math.cos(step) * c[i] + math.sin(step) / step * tangent[i] for i in range(k)]
        mean_norm = combined_norm(c)
        if mean_norm > tol_f:
            c = [x / mean_norm for x in c]
    # μ·(Σ|mᵢ|/n) = Σ (cᵢ/|mᵢ|)·(Σ|mⱼ|/n)·mᵢ, in one pass (no unit vectors are formed)
    scale = sum(norms) / n
    out = torch.mul(rows[kept[0]], c[0] / norms[kept[0]] * scale)
    for ci, i in zip(c[1:], kept[1:]):
        out.add_(torch.mul(rows[i], ci / norms[i] * scale))
    return _down(out.reshape(shape), dtype)


def _gram64(rows, chunk: int = 1 << 16):
    """The Gram matrix Σ rᵢ·rⱼ of 1-d tensors of one dtype, in float64 (each block of columns
    converted to float64: exact products, float64 sums), on the CPU."""
    n, N = len(rows), rows[0].numel()
    gram = torch.zeros((n, n), dtype=torch.float64, device=rows[0].device)
    for lo in range(0, N, chunk):
        block = torch.stack([r[lo:lo + chunk] for r in rows]).to(torch.float64)
        gram += block @ block.mT
    return gram.cpu()
