"""Linear merge methods: weighted sums, add difference, averages, task arithmetic, clamping.

Every method here is an elementwise affine combination (or an elementwise selection) of its
inputs, so it works on tensors of any shape, empty and 0-d ones included.

Conventions (DESIGN §2): `alpha` is the weight of the *second* model, as in the AUTOMATIC1111
checkpoint merger, diffusers/InvokeAI, supermerger and sd-mecha. Where the reference tools disagree
the docstring says so and names the convention followed.

Arithmetic runs in the inputs' dtype when it is float32/float64; float16/bfloat16 inputs are
computed in float32 and the result is cast back to the first input's dtype.
"""

import math
from functools import reduce

from ._lazy import torch
from .registry import Bool, Delta, Float, Same, Weight, merge_method

# ------------------------------------------------------------------------------------------------
# Helpers shared by the method modules of this family (spherical.py and sd_mergers.py use them).


def _work_dtype(*tensors):
    """The dtype to compute in: the promoted dtype of the inputs, at least float32."""
    dtype = reduce(torch.promote_types, (t.dtype for t in tensors))
    return dtype if dtype in (torch.float32, torch.float64) else torch.float32


def _up(*tensors):
    """The inputs in the working dtype, and the dtype to return (the first input's)."""
    work = _work_dtype(*tensors)
    return [t if t.dtype == work else t.to(work) for t in tensors], tensors[0].dtype


def _down(result, dtype):
    return result if result.dtype == dtype else result.to(dtype)


# ------------------------------------------------------------------------------------------------
# Two-model interpolation


@merge_method(formula="(1 − α)·a + α·b", family="linear", elementwise=True)
def weighted_sum(a: Same, b: Same, *, alpha: Float() = 0.5) -> Same:
    """Linear interpolation between `a` and `b`: (1 − α)·a + α·b.

    α is the weight of `b` (A1111, diffusers, InvokeAI, supermerger, sd-mecha all agree):
    α = 0 gives `a`, α = 1 gives `b`, exactly. α outside [0, 1] extrapolates, as sd-mecha
    allows (supermerger's sliders stop at [0, 1]).
    """
    (a, b), dtype = _up(a, b)
    return _down(torch.lerp(a, b, float(alpha)), dtype)


def _smoothstep(alpha: float) -> float:
    return alpha * alpha * (3.0 - 2.0 * alpha)


def _inverse_smoothstep(alpha: float) -> float:
    return 0.5 - math.sin(math.asin(1.0 - 2.0 * alpha) / 3.0)


@merge_method(formula="(1 − α')·a + α'·b,  α' = 3α² − 2α³", family="linear", elementwise=True)
def sigmoid(a: Same, b: Same, *, alpha: Float(0.0, 1.0) = 0.5) -> Same:
    """Weighted sum with α eased by the smoothstep curve: α' = 3α² − 2α³.

    Convention of diffusers' CheckpointMergerPipeline and InvokeAI ("sigmoid"): α' then goes into
    (1 − α')·a + α'·b. α' stays in [0, 1], equals α at 0, 0.5 and 1, and is flatter near the ends
    (small α move less towards `b` than with weighted_sum).
    """
    (a, b), dtype = _up(a, b)
    return _down(torch.lerp(a, b, _smoothstep(float(alpha))), dtype)


@merge_method(formula="(1 − α')·a + α'·b,  α' = 1/2 − sin(asin(1 − 2α)/3)", family="linear", elementwise=True)
def inv_sigmoid(a: Same, b: Same, *, alpha: Float(0.0, 1.0) = 0.5) -> Same:
    """Weighted sum with α passed through the inverse smoothstep: α' = 1/2 − sin(asin(1 − 2α)/3).

    Convention of diffusers' CheckpointMergerPipeline and InvokeAI ("inv_sigmoid"): the inverse of
    `sigmoid`'s easing, steeper near the ends. α' = α at 0, 0.5 and 1.
    """
    (a, b), dtype = _up(a, b)
    return _down(torch.lerp(a, b, _inverse_smoothstep(float(alpha))), dtype)


@merge_method(formula="(a − α·β·b) / (1 − α·β)", family="linear", elementwise=True)
def weighted_subtraction(a: Same, b: Same, *, alpha: Float(0.0, 1.0) = 0.5,
                         beta: Float(0.0, 1.0, hi_open=True) = 0.5) -> Same:
    """Undo a weighted sum: (a − α·β·b) / (1 − α·β).

    If `a` = (1 − t)·x + t·b with t = α·β, this recovers x. Convention of sd-meh/sd-mecha
    ("weighted_subtraction"). sd-meh nudges β by 1e-10 when α = β = 1 (a division by ~0); here β
    is below 1 instead, so α·β < 1 always and the checker rejects the degenerate case.
    """
    (a, b), dtype = _up(a, b)
    t = float(alpha) * float(beta)
    return _down((a - t * b) / (1.0 - t), dtype)


# ------------------------------------------------------------------------------------------------
# Three-model combinations


@merge_method(formula="a + α·(b − c)", family="linear", elementwise=True)
def add_difference(a: Weight, b: Weight, c: Weight, *, alpha: Float() = 1.0) -> Weight:
    """Add the difference b − c to a: a + α·(b − c).

    Convention of the A1111 checkpoint merger, supermerger and sd-mecha: α = 1 adds the whole
    difference, α = 0 gives `a`. diffusers' community CheckpointMergerPipeline (`interp="add_diff"`)
    scales the difference by (1 − α) instead; convert with α = 1 − α_diffusers. (InvokeAI's
    "add_difference" passed a name that pipeline does not know, and got its weighted sum of `a`
    and `b`: see the README's "Coming from InvokeAI".)
    Negative α subtracts the difference. (A delta is added with plain `a + α * delta`.)
    """
    (a, b, c), dtype = _up(a, b, c)
    return _down(torch.add(a, b - c, alpha=float(alpha)), dtype)


@merge_method(formula="(1 − α − β)·a + α·b + β·c", family="linear", elementwise=True)
def triple_sum(a: Same, b: Same, c: Same, *, alpha: Float() = 1 / 3,
               beta: Float() = 1 / 3) -> Same:
    """Three-way weighted sum: (1 − α − β)·a + α·b + β·c.

    supermerger's and sd-meh's "Triple sum": α is the weight of `b`, β the weight of `c`, and `a`
    gets the rest. The default weighs the three models equally.
    """
    (a, b, c), dtype = _up(a, b, c)
    alpha, beta = float(alpha), float(beta)
    return _down((1.0 - alpha - beta) * a + alpha * b + beta * c, dtype)


@merge_method(formula="(1 − β)·((1 − α)·a + α·b) + β·c", family="linear", elementwise=True)
def sum_twice(a: Same, b: Same, c: Same, *, alpha: Float() = 0.5, beta: Float() = 0.5) -> Same:
    """Two chained weighted sums: (1 − β)·((1 − α)·a + α·b) + β·c.

    supermerger's and sd-meh's "Twice" mode: first `a` and `b` with α, then the result and `c`
    with β.
    """
    (a, b, c), dtype = _up(a, b, c)
    return _down(torch.lerp(torch.lerp(a, b, float(alpha)), c, float(beta)), dtype)


# ------------------------------------------------------------------------------------------------
# Many models


@merge_method(formula="(m₁ + … + mₙ) / n", family="linear", min_models=1, elementwise=True)
def n_average(*models: Same) -> Same:
    """The mean of the models: (m₁ + … + mₙ) / n.

    sd-mecha's `n_average`, mergekit's `linear` with equal weights. With a single model, that
    model.
    """
    work = _work_dtype(*models)
    total = models[0].to(work, copy=True)
    for m in models[1:]:
        total += m.to(work)
    total /= len(models)
    return _down(total, models[0].dtype)


@merge_method(formula="base + λ·(δ₁ + … + δₙ)   (÷ n when normalize)", family="linear", elementwise=True)
def task_arithmetic(base: Weight, *deltas: Delta, lambda_: Float() = 1.0,
                    normalize: Bool() = False) -> Weight:
    """Task arithmetic (Ilharco et al. 2023): base + λ·Σᵢ δᵢ over task vectors δᵢ = mᵢ − base.

    mergekit's `task_arithmetic` with its names: `lambda` scales the summed task vectors,
    `normalize` divides the sum by the number of deltas (mergekit divides by the sum of the
    per-model weights; here per-model weights are written in the recipe as `w * (m - base)`).
    mergekit's default is normalize = false for task arithmetic, as here.
    """
    work = _work_dtype(base, *deltas)
    if not deltas:
        return base
    total = deltas[0].to(work, copy=True)
    for d in deltas[1:]:
        total += d.to(work)
    scale = float(lambda_) / (len(deltas) if normalize else 1)
    return _down(torch.add(base.to(work), total, alpha=scale), base.dtype)


@merge_method(formula="a", family="linear", elementwise=True)
def copy(a: Same) -> Same:
    """The input unchanged (no interpolation): useful as a per-key passthrough."""
    return a


@merge_method(formula="min(max(a, lo'), hi'),  lo' = lerp(min mᵢ, below, s), hi' = lerp(max mᵢ, above, s)",
              family="linear", elementwise=True)
def clamp(a: Same, *bounds: Same, stiffness: Float(0.0, 1.0) = 0.0) -> Same:
    """Clamp `a` elementwise between the smallest and the largest of `bounds`.

    sd-mecha's `clamp` (supermerger's "clip" idea). With stiffness s > 0 the bounds are pulled
    towards the middle of the bound values: the upper bound moves from max mᵢ towards `above`, the
    smallest mᵢ that is ≥ the mean of the mᵢ, and the lower bound from min mᵢ towards `below`, the
    largest mᵢ that is ≤ the mean (lerp by s). The band thus narrows to the bounds nearest the mean
    on each side; with two bounds those are the min and the max, so stiffness has no effect.
    """
    work = _work_dtype(a, *bounds)
    a_w = a.to(work)
    bs = [b.to(work) for b in bounds]
    hi = reduce(torch.maximum, bs)
    lo = reduce(torch.minimum, bs)
    s = float(stiffness)
    if s:
        mean = reduce(torch.add, bs) / len(bs)
        above = hi.clone()  # the smallest bound >= mean (max itself qualifies)
        below = lo.clone()  # the largest bound <= mean
        for b in bs:
            above = torch.where((b >= mean) & (b < above), b, above)
            below = torch.where((b <= mean) & (b > below), b, below)
        hi = torch.lerp(hi, above, s)
        lo = torch.lerp(lo, below, s)
    return _down(torch.minimum(torch.maximum(a_w, lo), hi), a.dtype)


@merge_method(formula="mₖ where |mₖ| = maxᵢ |mᵢ|", family="linear", min_models=1, elementwise=True)
def max_abs(*models: Same) -> Same:
    """Elementwise, the value of largest magnitude among the models (the first one on ties).

    A sign-preserving "take the strongest" selection, as in sd-mecha's select-max-delta recipes and
    TIES' magnitude selection without trimming.
    """
    out = models[0]
    for m in models[1:]:
        out = torch.where(m.abs() > out.abs(), m, out)
    return _down(out, models[0].dtype)


@merge_method(formula="mₖ where |mₖ| = minᵢ |mᵢ|", family="linear", min_models=1, elementwise=True)
def min_abs(*models: Same) -> Same:
    """Elementwise, the value of smallest magnitude among the models (the first one on ties)."""
    out = models[0]
    for m in models[1:]:
        out = torch.where(m.abs() < out.abs(), m, out)
    return _down(out, models[0].dtype)
