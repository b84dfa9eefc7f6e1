"""Task-vector sparsification and consensus: TIES, DARE, DELLA, Model Breadcrumbs, SCE, Model Stock,
geometric median.

The task-vector methods take deltas and return a delta, so a recipe reads

    base + ties(*[m - base for m in fts], density=0.2)

They follow mergekit's "generalized task arithmetic" (same names, same defaults for `normalize`
and `rescale`): each task vector δᵢ is sparsified, then the survivors are combined

    no consensus (…_linear, breadcrumbs):  δ = λ · Σᵢ δ̂ᵢ                 (÷ n with normalize)
    sign consensus (…ties, della):         γ = sgn Σᵢ δ̂ᵢ   (or sgn Σᵢ sgn δ̂ᵢ with consensus="count")
                                           δ = λ · Σᵢ [sgn δ̂ᵢ = γ]·δ̂ᵢ   (÷ Σᵢ [sgn δ̂ᵢ = γ] with normalize)

γ = +1 where the vote is a tie (mergekit); zero entries never agree with γ, so a disjoint mean is
the mean of the non-zero entries of the elected sign, and 0 where there are none.

Per-model weights. mergekit gives each model a `weight`; a list of per-model weights is not
expressible as a per-key Hyper yet, so these methods take scalar hyperparameters only: `lambda`
scales the result (TIES' λ, mergekit della's `lambda`; with normalize = false it equals mergekit with
every model's `weight` set to λ, with normalize = true mergekit's uniform weights cancel). Per-model
weights can be written in the recipe as `ties(w1 * (m1 - base), w2 * (m2 - base))`: with
consensus="sum" and normalize=false that is exactly mergekit's weighted form.

Trims. Magnitude trims keep, per task vector, the ⌊density·N⌋ largest |δ| (at least one entry)
with an exact selection (a radix select on the float bits: O(N), no sort, identical on every device);
entries tied with the smallest kept magnitude are kept too. Random methods draw their masks from a
generator derived from (seed, key name, model index) — see `_random.py` — so results do not
depend on thread count, device or key order.

Arithmetic runs in float32 (float64 when an input is float64); the result has the first input's
dtype and shape.
"""

import math
from functools import reduce

from . import _random
from ._lazy import torch
from ._reduce import norm64
from .registry import Bool, Choice, Delta, Float, Int, KeyName, Same, Weight, merge_method

_DENSITY = Float(0.0, 1.0, lo_open=True)
_CONSENSUS = Choice("sum", "count")
# How dropped task vectors are rescaled: survivors ÷ their keep probability (the papers'), or the
# whole vector scaled back to its norm before the drop (mergekit's `rescale`, which matches L1).
_RESCALE_NORM = Choice("probability", "l1", "l2", "linf")

# ------------------------------------------------------------------------------------------------
# Helpers


def _work_dtype(*tensors):
    dtype = reduce(torch.promote_types, (t.dtype for t in tensors))
    return torch.float64 if dtype == torch.float64 else torch.float32


def _stack(tensors, dtype):
    """The tensors flattened into the rows of one new (n, N) tensor of `dtype` (a copy)."""
    first = tensors[0]
    for t in tensors[1:]:
        if t.shape != first.shape:
            raise ValueError(f"shape mismatch: {tuple(first.shape)} and {tuple(t.shape)}")
    out = torch.empty((len(tensors), first.numel()), dtype=dtype, device=first.device)
    for i, t in enumerate(tensors):
        out[i].copy_(t.reshape(-1))
    return out


def _finish(flat, like):
    """`flat` with the shape and dtype of `like`."""
    out = flat.reshape(like.shape)
    return out if out.dtype == like.dtype else out.to(like.dtype)


def _count(fraction: float, n: int) -> int:
    """⌊fraction·n⌋ (a hair of slack so that 0.57·100 is 57, not 56)."""
    return max(0, min(n, math.floor(float(fraction) * n + 1e-7)))


def _kth_smallest(values, k: int):
    """The k-th smallest (1-based) entry of each row of `values` (n, N), as an (n, 1) tensor.

    `values` must be non-negative float32 or float64 (magnitudes, variances). A radix select on the
    bit patterns, which order non-negative floats as integers: 16 bits per pass, each pass a
    `bincount` over the candidates left by the previous one. Exact, O(N) per pass, the same on
    CPU and CUDA, and several times faster than `kthvalue`. Rows are done one at a time, so the
    scratch memory is that of one row.
    """
    n, N = values.shape
    if not 1 <= k <= N:
        raise ValueError(f"k = {k} is outside [1, {N}]")
    if values.dtype == torch.float64:
        int_dtype, shifts = torch.int64, (48, 32, 16, 0)
    elif values.dtype == torch.float32:
        int_dtype, shifts = torch.int32, (16, 0)
    else:
        raise TypeError(f"_kth_smallest needs float32 or float64, got {values.dtype}")
    found = []
    for row in values:
        cand = row.contiguous().view(int_dtype)
        remaining, prefix = k, 0
        for i, shift in enumerate(shifts):
            digit = cand >> shift
            if i:  # the first digit needs no mask: the sign bit of a non-negative float is 0
                digit &= 0xFFFF
            cumulative = torch.bincount(digit, minlength=65536).cumsum(0)
            d = int(torch.searchsorted(cumulative, remaining))  # first bucket reaching the k-th entry
            if d:
                remaining -= int(cumulative[d - 1])
            prefix = (prefix << 16) | d
            if i < len(shifts) - 1:
                cand = cand[digit == d]
            del digit, cumulative
        found.append(prefix)
    return torch.tensor(found, dtype=int_dtype, device=values.device).view(values.dtype)[:, None]


def _trim_magnitude_(D, density: float, gamma: float = 0.0):
    """In place, per row (task vector) of D: keep the ⌊density·N⌋ (≥ 1) largest magnitudes; with
    gamma, first drop the ⌊gamma·N⌋ largest (Model Breadcrumbs / mergekit's magnitude_outliers:
    where density + gamma > 1, fewer outliers are dropped so that density is met).

    Ties at the lower cut are kept; ties at the upper cut are dropped (a tie never lets an outlier
    through)."""
    N = D.shape[1]
    if density >= 1 or N == 0:
        return D
    keep = max(1, _count(density, N))
    n_top = _count(gamma, N)
    n_bottom = N - keep - n_top
    if n_bottom < 0:
        n_top += n_bottom
        n_bottom = 0
    if n_bottom == 0 and n_top == 0:
        return D
    for x in D:  # one task vector at a time: scratch memory of one row
        mag = x.abs()[None]
        low = _kth_smallest(mag, n_bottom + 1)[0] if n_bottom > 0 else None
        high = _kth_smallest(mag, N - n_top + 1)[0] if n_top > 0 else None
        mag = mag[0]
        if high is None:
            x.mul_(mag.ge_(low))  # in place: mag becomes the 0/1 mask, no bool→float copy
        elif low is None:
            x.mul_(mag.lt_(high))
        else:
            x.mul_(mag.ge(low).logical_and_(mag.lt(high)))
        del mag
    return D


def _norm_of(x, norm: str):
    """The L1, L2 or L∞ norm of a whole (flattened) task vector, accumulated in float64."""
    if norm == "l1":
        return float(torch.sum(x.abs(), dtype=torch.float64))
    if norm == "l2":
        return float(norm64(x))
    return float(x.abs().max()) if x.numel() else 0.0


def _rescale_to_(row, before: float, norm: str) -> None:
    """In place: scale a dropped task vector back to the norm it had before the drop (mergekit's
    rescaling; left as is when either norm is below 1e-7, as there)."""
    after = _norm_of(row, norm)
    if before >= 1e-7 and after >= 1e-7:
        row.mul_(before / after)


def _dare_renormed_(D, density: float, seed: int, key: str, rescale_norm: str):
    """In place: keep each entry of task vector i with probability `density`, drawn from the
    stream (seed, key, i), then scale the vector back to its `rescale_norm` norm (a whole-vector
    quantity, so this works on whole tensors; the other rescalings go by blocks, `_dare_prune`)."""
    n, N = D.shape
    if density >= 1 or N == 0:
        return D
    for i in range(n):
        row = D[i]
        before = _norm_of(row, rescale_norm)
        row.mul_(_random.keep_mask((N,), density, seed, key, i, device=D.device, dtype=D.dtype))
        _rescale_to_(row, before, rescale_norm)
    return D


_RANK_BLOCK = 1 << 18  # elements ranked by one flat sort (whole rows)


def _keep_probabilities(x, p_of_rank, bits_dtype):
    """p[r, c] = p_of_rank[r, rank of |x[r, c]| in row r], ranks by magnitude, ties by position
    (a stable sort). Non-negative floats order as their bit patterns read as integers, and an
    integer sort is faster than a float one (no NaN-aware comparisons). For float32, a block of
    rows is ranked by one flat sort of (row << 32) + bits, which keeps every row's entries together
    and in the same order as a sort per row. Blocks of 256 Ki entries (2 MiB of keys) stay in the
    cache: DELLA on two 2816 × 1024 deltas took 205 ms with them, 340 ms with blocks of 2 Mi
    entries or one sort of everything, and 302 ms with a sort per row (one thread)."""
    rows, cols = x.shape
    p = torch.empty_like(x)
    if bits_dtype != torch.int32:  # float64 bit patterns leave no room for the row
        return p.scatter_(1, x.abs().view(bits_dtype).argsort(dim=1, stable=True), p_of_rank)
    step = max(1, _RANK_BLOCK // cols)
    row_keys = (torch.arange(min(step, rows), dtype=torch.int64, device=x.device) << 32)[:, None]
    for lo in range(0, rows, step):
        hi = min(rows, lo + step)
        keys = x[lo:hi].abs().view(torch.int32).to(torch.int64).add_(row_keys[:hi - lo])
        order = keys.view(-1).argsort(stable=True)
        del keys
        p[lo:hi].view(-1).scatter_(0, order, p_of_rank[lo:hi].reshape(-1))
    return p


def _della_low(density: float, epsilon: float) -> float:
    """density − ε, the keep probability of each row's smallest entry (checked)."""
    low, high = density - epsilon, density + epsilon
    if low < 0 or high > 1:
        raise ValueError(f"della needs density ± epsilon inside [0, 1], got density = {density} and "
                         f"epsilon = {epsilon}")
    return low


def _della_p(x, density: float, epsilon: float, low: float):
    """The keep probability of every entry of x (rows, cols): by its rank in its row,
    (density − ε) + r·2ε/(cols − 1), computed per rank in x's dtype and scattered to the entries
    (the same rounding as computing it per entry); `density` for rows of one entry."""
    rows, cols = x.shape
    if cols == 1:
        return torch.full((rows, cols), density, dtype=x.dtype, device=x.device)
    p_of_rank = torch.arange(cols, device=x.device).to(x.dtype).mul_(2 * epsilon / (cols - 1)).add_(low)
    bits_dtype = torch.int64 if x.dtype == torch.float64 else torch.int32
    return _keep_probabilities(x, p_of_rank.expand(rows, cols), bits_dtype)


def _della_renormed_(D, shape, density: float, epsilon: float, seed: int, key: str, rescale_norm: str):
    """In place: DELLA's MAGPRUNE on each task vector (see `della`), then each vector scaled back
    to its `rescale_norm` norm (a whole-vector quantity, so on whole tensors; the other rescalings
    go by blocks, `_della_prune`)."""
    n, N = D.shape
    if density >= 1 or N == 0:
        return D
    low = _della_low(density, epsilon)
    rows = shape[0] if len(shape) >= 2 else 1
    for i in range(n):
        x = D[i].view(rows, N // rows)
        keep = _random.uniform((N,), seed, key, i, device=D.device).view(x.shape) < _della_p(x, density, epsilon, low)
        before = _norm_of(x, rescale_norm)
        x.mul_(keep)
        _rescale_to_(x, before, rescale_norm)
    return D


_GTA_BLOCK = 1 << 20  # elements per block of rows of `_gta_in_blocks`


def _gta_in_blocks(deltas, prune, seed: int, key: str, *, consensus, normalize: bool, lambda_: float):
    """Prune each task vector, then `_combine`, a block of rows at a time, for the prunings whose
    every step is local to rows: `prune(x, g)` prunes x (rows, cols) of one task vector in place,
    drawing its random numbers from g, that vector's generator for (seed, key, i), in order (CPU
    generators give the same numbers drawn in pieces as at once); `prune` None keeps everything.
    Bit-identical to `_gta` with the same pruning on whole tensors, with buffers of a block instead
    of whole stacked copies, masks and draws, whose fresh pages were most of DARE's and DELLA's
    time on large keys."""
    shape = tuple(deltas[0].shape)
    dtype = _work_dtype(*deltas)
    for d in deltas[1:]:
        if tuple(d.shape) != shape:
            raise ValueError(f"shape mismatch: {shape} and {tuple(d.shape)}")
    flat = [d.reshape(-1) for d in deltas]
    N = flat[0].numel()
    rows = shape[0] if len(shape) >= 2 else 1
    cols = N // rows if rows else 0
    gens = [_random.generator(seed, key, i) for i in range(len(deltas))] if prune is not None else []
    out = torch.empty(N, dtype=dtype, device=flat[0].device)
    step = max(1, _GTA_BLOCK // max(cols, 1)) * cols
    for a in range(0, N, step) if N else ():
        b = min(N, a + step)
        D = _stack([f[a:b] for f in flat], dtype)
        for x, g in zip(D, gens):
            prune(x.view(-1, cols), g)
        out[a:b] = _combine(D, consensus=consensus, normalize=normalize, lambda_=lambda_)
    return _finish(out, deltas[0])


def _della_prune(density: float, epsilon: float, rescale: bool, N: int):
    """DELLA's MAGPRUNE of one task vector's rows with probability rescaling or none (see
    `della`), or None when it keeps everything."""
    if density >= 1 or N == 0:
        return None
    low = _della_low(density, epsilon)

    def prune(x, g):
        p = _della_p(x, density, epsilon, low)
        u = torch.rand(x.shape, generator=g, dtype=torch.float32).to(x.device)
        if rescale:
            x.div_(p).masked_fill_(u >= p, 0)
        else:
            x.mul_(u < p)
    return prune


def _dare_prune(density: float, rescale: bool, N: int):
    """DARE's drop of one task vector with probability rescaling or none (see `dare_linear`), or None
    when it keeps everything."""
    if density >= 1 or N == 0:
        return None

    def prune(x, g):
        x.mul_(_random.keep_mask(x.shape, density, device=x.device, dtype=x.dtype, gen=g))
        if rescale:
            x.div_(density)
    return prune


def _dare_gta(deltas, density: float, rescale: bool, seed: int, key: str, rescale_norm: str, *,
              consensus, normalize: bool, lambda_: float):
    """DARE's drop, then `_combine`: by blocks of rows with probability rescaling or none, on whole
    tensors when a norm rescaling needs each whole vector's norm."""
    if not rescale or rescale_norm == "probability":
        return _gta_in_blocks(deltas, _dare_prune(density, rescale, deltas[0].numel()), seed, key,
                              consensus=consensus, normalize=normalize, lambda_=lambda_)
    return _gta(deltas, lambda D: _dare_renormed_(D, density, seed, key, rescale_norm),
                consensus=consensus, normalize=normalize, lambda_=lambda_)


def _della_gta(deltas, density: float, epsilon: float, rescale: bool, seed: int, key: str, rescale_norm: str, *,
               consensus, normalize: bool, lambda_: float):
    """DELLA's MAGPRUNE, then `_combine`: by blocks of rows with probability rescaling or none, on
    whole tensors when a norm rescaling needs each whole vector's norm."""
    if not rescale or rescale_norm == "probability":
        return _gta_in_blocks(deltas, _della_prune(density, epsilon, rescale, deltas[0].numel()), seed, key,
                              consensus=consensus, normalize=normalize, lambda_=lambda_)
    shape = tuple(deltas[0].shape)
    return _gta(deltas, lambda D: _della_renormed_(D, shape, density, epsilon, seed, key, rescale_norm),
                consensus=consensus, normalize=normalize, lambda_=lambda_)


def _column_variance(D):
    """The population variance of each column of D (n, N) over its n rows, in two passes over the
    rows (`D.var(0)` reduces the short outer dimension with a Welford loop: ~8x slower)."""
    n = D.shape[0]
    mean = D.sum(0).div_(n)
    acc = torch.zeros_like(mean)
    for row in D:
        d = row - mean
        acc.addcmul_(d, d)
    return acc.div_(n)


def _count_positive(D):
    """How many rows of D (n, N) are > 0 in each column, in D's dtype (row by row: a bool (n, N)
    temporary and its reduction cost more)."""
    count = torch.zeros(D.shape[1], dtype=D.dtype, device=D.device)
    for row in D:
        count.add_((row > 0).to(D.dtype))
    return count


def _elect_positive(D, consensus: str):
    """γ > 0 per entry: the sign vote over the task vectors (ties elect +, as mergekit)."""
    if consensus == "sum":
        return D.sum(0) >= 0
    if consensus == "count":
        return (D > 0).sum(0) >= (D < 0).sum(0)
    raise ValueError(f"unknown consensus {consensus!r} (expected 'sum' or 'count')")


def _combine(D, *, consensus, normalize: bool, lambda_: float):
    """The combination step of generalized task arithmetic (see the module docstring). D is
    modified."""
    n = D.shape[0]
    if consensus is None:
        out = D.sum(0)
        if normalize:
            out /= n
    else:
        sign = torch.where(_elect_positive(D, consensus), 1.0, -1.0).to(D.dtype)  # γ
        D.mul_(sign).clamp_min_(0)  # γ·δ̂ᵢ: the entries that agree with γ are now the positive ones
        out = D.sum(0)
        if normalize:
            out /= _count_positive(D).clamp_min_(1)
        out.mul_(sign)
    if lambda_ != 1:
        out *= lambda_
    return out


def _gta(deltas, trim, *, consensus, normalize: bool, lambda_: float):
    D = _stack(deltas, _work_dtype(*deltas))
    trim(D)
    return _finish(_combine(D, consensus=consensus, normalize=bool(normalize), lambda_=float(lambda_)),
                   deltas[0])


# ------------------------------------------------------------------------------------------------
# TIES


class _TiesStream:
    """`ties` over slices (the engine's streamed evaluation, see MethodSpec.streamed): the passes
    find each task vector's magnitude threshold, the one `_trim_magnitude_` finds on the whole
    tensor; then each slice is trimmed (|δ| ≥ threshold, as there) and combined by `_combine`, which
    is element-wise, so the result is bit-identical to `ties` on the whole tensors."""

    def __init__(self, numel: int, *, density=0.2, lambda_=1.0, consensus="sum", normalize=True):
        self.density, self.lambda_ = float(density), float(lambda_)
        self.consensus, self.normalize = consensus, bool(normalize)
        # the cut of `_trim_magnitude_` (gamma = 0): keep ⌊density·N⌋ ≥ 1, none when all are kept
        keep = max(1, _count(self.density, numel)) if numel else 0
        self.k = numel - keep + 1 if self.density < 1 and numel and keep < numel else None
        self.selects = None
        self.thresholds = None

    def wants_pass(self) -> bool:
        return self.k is not None and (self.selects is None or not self.selects[0].done)

    def observe(self, args) -> None:
        if self.selects is None:
            from ._select import StreamedKthSmallest

            dtype = _work_dtype(*args)
            self.selects = [StreamedKthSmallest(self.k, dtype) for _ in args]
        dtype = self.selects[0].dtype
        for sel, x in zip(self.selects, args):
            sel.observe(x.to(dtype).abs())

    def end_pass(self) -> None:
        for sel in self.selects:
            sel.end_pass()

    def apply(self, args):
        D = _stack(args, _work_dtype(*args))
        if self.k is not None:
            if self.thresholds is None:
                self.thresholds = [sel.value() for sel in self.selects]
            for x, low in zip(D, self.thresholds):
                x.mul_(x.abs().ge_(low))
        return _finish(_combine(D, consensus=self.consensus, normalize=self.normalize,
                                lambda_=self.lambda_), args[0])


@merge_method(formula="λ · Σᵢ[sgn δ̂ᵢ = γ]·δ̂ᵢ / Σᵢ[sgn δ̂ᵢ = γ],  δ̂ᵢ = top-k(δᵢ, density),  γ = sgn Σᵢ δ̂ᵢ",
              family="sparse", streamed=_TiesStream)
def ties(*deltas: Delta, density: _DENSITY = 0.2, lambda_: Float() = 1.0, consensus: _CONSENSUS = "sum",
         normalize: Bool() = True) -> Delta:
    """TIES-Merging (Yadav et al. 2023): trim, elect sign, disjoint merge.

    1. Trim: each task vector keeps its ⌊density·N⌋ largest-magnitude entries (the paper's top-k%,
       k = 20 % by default), the rest are zeroed.
    2. Elect: γ = sgn Σᵢ δ̂ᵢ per entry (consensus="sum", the paper's "mass" vote; "count" votes
       with sgn Σᵢ sgn δ̂ᵢ, mergekit's `count`); a tie elects +.
    3. Disjoint merge: the mean of the entries whose sign is γ (normalize=false: their sum).

    `lambda` scales the result (the paper's λ).

    Compared with peers: mergekit's `ties` has normalize = true too, but its density defaults to 1
    (nothing trimmed): write density=1 for that. mergekit keeps exactly ⌊density·N⌋ entries, choosing
    among equal magnitudes by sort order; here every entry tied with the smallest kept magnitude is
    kept, so on bf16 deltas, where many magnitudes are equal, a little more than `density` survives
    (about 51 % at density 0.5). sd-mecha's `ties_sum` votes with the sum (its vote_sgn = false,
    consensus="sum" here; vote_sgn = true is consensus="count") and elects no sign on a tie, where
    mergekit and this elect +; `mecha convert` writes sd-mecha's defaults out.
    """
    return _gta(deltas, lambda D: _trim_magnitude_(D, float(density)), consensus=consensus,
                normalize=normalize, lambda_=lambda_)


# ------------------------------------------------------------------------------------------------
# DARE


@merge_method(formula="λ · Σᵢ mᵢ ⊙ δᵢ / density,  mᵢ ~ Bernoulli(density)   (÷ n when normalize)",
              family="sparse")
def dare_linear(*deltas: Delta, density: _DENSITY = 0.5, lambda_: Float() = 1.0, rescale: Bool() = True,
                normalize: Bool() = False, seed: Int(0) = 0, rescale_norm: _RESCALE_NORM = "probability",
                key: KeyName) -> Delta:
    """DARE (Yu et al. 2024, "Language Models are Super Mario"): Drop And REscale, then sum.

    Each entry of each task vector is kept with probability `density` (DARE's 1 − p, named as in
    mergekit) and the survivors are divided by `density` (rescale=true), which keeps the expected
    task vector unchanged. The masks come from (seed, key name, model index). The dropped vectors
    are summed (normalize=true: averaged) and scaled by λ.

    Compared with peers: mergekit's `dare_linear` (rescale = true, normalize = false as here)
    rescales by scaling each dropped vector back to its L1 norm instead of dividing by density:
    write rescale_norm="l1" for that (the paper's 1/(1 − p) is rescale_norm="probability", the
    default). mergekit's density defaults to 1 (nothing dropped); its random masks differ from
    these, which come from `seed`.
    """
    return _dare_gta(deltas, float(density), bool(rescale), int(seed), key, str(rescale_norm), consensus=None,
                     normalize=bool(normalize), lambda_=float(lambda_))


@merge_method(formula="λ · Σᵢ[sgn δ̃ᵢ = γ]·δ̃ᵢ,  δ̃ᵢ = mᵢ ⊙ δᵢ / density,  γ = sgn Σᵢ δ̃ᵢ",
              family="sparse")
def dare_ties(*deltas: Delta, density: _DENSITY = 0.5, lambda_: Float() = 1.0, rescale: Bool() = True,
              normalize: Bool() = False, consensus: _CONSENSUS = "sum", seed: Int(0) = 0,
              rescale_norm: _RESCALE_NORM = "probability", key: KeyName) -> Delta:
    """DARE's random drop and rescale, then TIES' sign election and disjoint merge.

    As `dare_linear` for the drop (keep probability `density`, survivors ÷ density), as `ties` for
    the election and merge. mergekit's `dare_ties` defaults: rescale = true, normalize = false (the
    agreeing entries are summed; normalize=true averages them).

    Compared with peers: as `dare_linear`, write rescale_norm="l1" for mergekit's rescaling and
    density=1 for its default density.
    """
    return _dare_gta(deltas, float(density), bool(rescale), int(seed), key, str(rescale_norm), consensus=consensus,
                     normalize=bool(normalize), lambda_=float(lambda_))


# ------------------------------------------------------------------------------------------------
# DELLA


@merge_method(formula="λ · Σᵢ[sgn δ̃ᵢ = γ]·δ̃ᵢ / Σᵢ[sgn δ̃ᵢ = γ],  δ̃ᵢ = mᵢ ⊙ δᵢ / pᵢ,  "
                      "pᵢ = density − ε + 2ε·rank(|δᵢ|)/(cols − 1)",
              family="sparse")
def della(*deltas: Delta, density: _DENSITY = 0.5, epsilon: Float(0.0, 0.5) = 0.15, lambda_: Float() = 1.0,
          rescale: Bool() = True, normalize: Bool() = True, consensus: _CONSENSUS = "sum", seed: Int(0) = 0,
          rescale_norm: _RESCALE_NORM = "probability", key: KeyName) -> Delta:
    """DELLA-Merging (Deep et al. 2024): MAGPRUNE, sign election, disjoint merge, scale by λ.

    MAGPRUNE: within each row (the tensor as (shape[0], −1); a vector is one row), entries are
    ranked by magnitude, r = 0 for the smallest … cols − 1 for the largest (ties by position), and
    each is kept with probability p = (density − ε) + 2ε·r/(cols − 1): larger entries are dropped
    less, the mean keep probability is `density`. Survivors are divided by their own p
    (rescale=true, the paper's 1/(1 − pᵢ) with pᵢ the drop probability). Then TIES' election and
    disjoint mean, and λ (mergekit's `lambda`).

    Needs density − ε ≥ 0 and density + ε ≤ 1; density = 1 keeps everything.

    Compared with peers: mergekit's `della` (normalize = rescale = true as here) does not divide
    each survivor by its keep probability: it scales each pruned task vector back to its L1 norm;
    write rescale_norm="l1" for that. mergekit ranks along dim 1 of the raw tensor (the input
    channels of a conv kernel); this ranks along the flattened rows. Its density defaults to 1.
    """
    return _della_gta(deltas, float(density), float(epsilon), bool(rescale), int(seed), key, str(rescale_norm),
                      consensus=consensus, normalize=bool(normalize), lambda_=float(lambda_))


@merge_method(formula="λ · Σᵢ mᵢ ⊙ δᵢ / pᵢ,  pᵢ = density − ε + 2ε·rank(|δᵢ|)/(cols − 1)   (÷ n when normalize)",
              family="sparse")
def della_linear(*deltas: Delta, density: _DENSITY = 0.5, epsilon: Float(0.0, 0.5) = 0.15,
                 lambda_: Float() = 1.0, rescale: Bool() = True, normalize: Bool() = False, seed: Int(0) = 0,
                 rescale_norm: _RESCALE_NORM = "probability", key: KeyName) -> Delta:
    """DELLA's MAGPRUNE (see `della`) without sign election: the pruned task vectors are summed
    (normalize=true: averaged) and scaled by λ. mergekit's `della_linear` defaults.

    Compared with peers: as `della`, write rescale_norm="l1" for mergekit's rescaling."""
    return _della_gta(deltas, float(density), float(epsilon), bool(rescale), int(seed), key, str(rescale_norm),
                      consensus=None, normalize=bool(normalize), lambda_=float(lambda_))


# ------------------------------------------------------------------------------------------------
# Model Breadcrumbs


@merge_method(formula="λ · Σᵢ mᵢ ⊙ δᵢ,  mᵢ drops the ⌊gamma·N⌋ largest |δᵢ| and keeps the next ⌊density·N⌋   "
                      "(÷ n when normalize)",
              family="sparse")
def breadcrumbs(*deltas: Delta, density: _DENSITY = 0.9, gamma: Float(0.0, 1.0, hi_open=True) = 0.01,
                lambda_: Float() = 1.0, normalize: Bool() = False) -> Delta:
    """Model Breadcrumbs (Davari & Belilovsky 2024): drop outliers and small entries, then sum.

    In each task vector the ⌊gamma·N⌋ largest magnitudes are dropped (outliers), then the smallest
    ones, so that ⌊density·N⌋ entries remain (where density + gamma > 1, fewer outliers are
    dropped). The masked vectors are summed (normalize=true: averaged) and scaled by λ.
    mergekit's `breadcrumbs` (magnitude_outliers) with its defaults (normalize = false); as there,
    density = 1 keeps every entry whatever gamma. Ties at the upper cut are dropped, at the lower
    cut kept.
    """
    return _gta(deltas, lambda D: _trim_magnitude_(D, float(density), float(gamma)), consensus=None,
                normalize=normalize, lambda_=lambda_)


@merge_method(formula="λ · Σᵢ[sgn δ̂ᵢ = γ]·δ̂ᵢ,  δ̂ᵢ = breadcrumbs mask of δᵢ,  γ = sgn Σᵢ δ̂ᵢ",
              family="sparse")
def breadcrumbs_ties(*deltas: Delta, density: _DENSITY = 0.9, gamma: Float(0.0, 1.0, hi_open=True) = 0.01,
                     lambda_: Float() = 1.0, normalize: Bool() = False, consensus: _CONSENSUS = "sum") -> Delta:
    """Model Breadcrumbs' mask (see `breadcrumbs`), then TIES' sign election and disjoint merge.
    mergekit's `breadcrumbs_ties` defaults (normalize = false: the agreeing entries are summed)."""
    return _gta(deltas, lambda D: _trim_magnitude_(D, float(density), float(gamma)), consensus=consensus,
                normalize=normalize, lambda_=lambda_)


# ------------------------------------------------------------------------------------------------
# SCE


@merge_method(formula="λ · Σᵢ wᵢ[sgn δ̂ᵢ = γ]·δ̂ᵢ / Σᵢ wᵢ[sgn δ̂ᵢ = γ],  δ̂ᵢ = δᵢ ⊙ [Var_j δⱼ in top select_topk],  "
                      "wᵢ ∝ mean δ̂ᵢ²,  γ = sgn Σᵢ δ̂ᵢ",
              family="sparse")
def sce(*deltas: Delta, select_topk: _DENSITY = 1.0, lambda_: Float() = 1.0) -> Delta:
    """SCE (FuseLLM / FuseChat, Wan et al. 2024): Select, Calculate, Erase.

    Select: the entries whose variance across the task vectors is among the ⌊select_topk·Nz⌋
    largest (Nz = number of entries with non-zero variance) are kept in every task vector, the
    rest zeroed (select_topk = 1 keeps everything). Calculate: model i gets the weight
    wᵢ = mean(δ̂ᵢ²) / Σⱼ mean(δ̂ⱼ²) (uniform when all are zero). Erase: entries whose sign differs
    from γ = sgn Σᵢ δ̂ᵢ are dropped, and the rest are averaged with the weights wᵢ; λ scales.

    mergekit's `sce` (population variance; a tie in the vote elects +).
    """
    D = _stack(deltas, _work_dtype(*deltas))
    n, N = D.shape
    if N == 0:
        return _finish(D.sum(0), deltas[0])
    if select_topk < 1:
        variance = _column_variance(D)
        k = _count(select_topk, int(torch.count_nonzero(variance)))
        if k == 0:
            D.zero_()
        else:
            threshold = _kth_smallest(variance[None], N - k + 1)[0]
            D.mul_(variance >= threshold)
        del variance
    energy = torch.stack([norm64(r) ** 2 for r in D]) / N  # (n,) mean δ̂ᵢ², float64
    total = float(energy.sum())
    weights = [float(e) / total for e in energy] if total > 0 else [1.0 / n] * n
    # Row by row: the (n, N) masks and products of the vectorised form cost more than the sums.
    sign = torch.where(D.sum(0) >= 0, 1.0, -1.0).to(D.dtype)  # γ (a tie elects +)
    num = torch.zeros_like(sign)
    den = torch.zeros_like(sign)
    for w, row in zip(weights, D):
        agree = (row * sign) > 0
        num.add_(row.mul_(agree), alpha=w)
        den.add_(agree.to(den.dtype), alpha=w)
    den[den == 0] = 1
    out = num.div_(den)
    if lambda_ != 1:
        out *= float(lambda_)
    return _finish(out, deltas[0])


# ------------------------------------------------------------------------------------------------
# Model Stock and the geometric median


_GRAM_BLOCK = 1 << 20  # elements per partial Gram matrix (the engine's slices are multiples of it)


def _model_stock_cols(shape: tuple[int, ...], filter_wise: bool) -> int:
    """Elements per angle: a row (the tensor as (shape[0], −1)) when filter-wise, else all."""
    n = math.prod(shape)
    return n // shape[0] if filter_wise and len(shape) >= 2 and shape[0] else max(n, 1)


def _add_gram_(gram, flat, offset: int, cols: int, dtype) -> None:
    """`_add_block_gram_` over 1-D tensors (base, models…) holding elements offset … of the
    flattened tensors, block by block (offset is a multiple of _GRAM_BLOCK)."""
    N = flat[0].numel()
    for lo in range(0, N, _GRAM_BLOCK):
        X = _stack([t[lo:lo + _GRAM_BLOCK] for t in flat], dtype)
        _add_block_gram_(gram, X, offset + lo, cols)


def _add_block_gram_(gram, X, offset: int, cols: int) -> None:
    """Add to gram[r] (rows, n, n) the dot products of the deltas mᵢ − base over the elements of
    `X` (1 + n, m: base first, then the models; elements offset … offset + m of the flattened
    tensors) that belong to row r. A fixed order: per block of _GRAM_BLOCK elements, the deltas in
    a new (n, m) tensor, each row's part of the block multiplied out by itself (BLAS, in the
    compute dtype), the parts added up in float64 in element order. The whole-tensor and the
    streamed model_stock both call this on the same blocks, shapes and strides, so their ratios
    are bit-identical, whatever the size of the engine's slices."""
    D = X[1:] - X[0]  # (n, m): at most a block, so from the heap, not fresh pages each time
    n, m = D.shape
    lo, end = offset, offset + m
    while lo < end:
        row, within = divmod(lo, cols)
        whole = 0 if within else (end - lo) // cols
        if whole == 0:  # a part of one row
            stop = min(end, (row + 1) * cols)
            P = D[:, lo - offset:stop - offset]
            gram[row] += (P @ P.mT).to(torch.float64)
        else:  # whole rows
            stop = lo + whole * cols
            R = D[:, lo - offset:stop - offset].reshape(n, whole, cols).transpose(0, 1)  # (rows, n, cols)
            gram[row:row + whole] += torch.bmm(R, R.mT).to(torch.float64)
        lo = stop


def _model_stock_ratio(gram):
    """t per row from its Gram matrix of the deltas (rows, n, n): N·cos θ / (1 + (N − 1)·cos θ),
    cos θ the mean cosine over pairs, clamped at 0."""
    n = gram.shape[1]
    norms = gram.diagonal(dim1=1, dim2=2).clamp_min(0).sqrt()  # (rows, n)
    outer = norms[:, :, None] * norms[:, None, :]
    cos = torch.where(outer > 0, gram / torch.where(outer > 0, outer, 1), 0).clamp(-1, 1)
    i, j = torch.triu_indices(n, n, offset=1, device=cos.device)
    cos_theta = cos[:, i, j].mean(1).clamp_min(0)  # (rows,)
    return n * cos_theta / (1 + (n - 1) * cos_theta)


def _model_stock_combine(flat, t, cols: int, offset: int, dtype):
    """base + t_row·(mean(mᵢ) − base) on 1-D tensors (base, models…) holding elements offset … of
    the flattened tensors, each element with the ratio of its row; element-wise, a block at a time
    (small buffers), in `dtype`."""
    N = flat[0].numel()
    out = torch.empty(N, dtype=dtype, device=flat[0].device)
    per = t.to(dtype)
    for lo in range(0, N, _GRAM_BLOCK):
        hi = min(N, lo + _GRAM_BLOCK)
        base = flat[0][lo:hi].to(dtype)
        mean = out[lo:hi]
        mean.copy_(flat[1][lo:hi])
        for x in flat[2:]:
            mean += x[lo:hi].to(dtype)
        mean /= len(flat) - 1
        mean -= base
        if per.numel() == 1:
            mean.mul_(per)
        else:
            mean.mul_(per[torch.arange(offset + lo, offset + hi, device=out.device) // cols])
        mean.add_(base)
    return out


class _ModelStockStream:
    """`model_stock` over slices (the engine's streamed evaluation, see MethodSpec.streamed): one
    pass adds up the deltas' Gram matrices block by block as the whole-tensor function does, then
    each slice is combined with its rows' ratios: bit-identical to `model_stock` on whole tensors."""

    def __init__(self, numel: int, *, shape=None, filter_wise=False):
        self.cols = _model_stock_cols(tuple(shape) if shape is not None else (numel,), bool(filter_wise))
        self.rows = max(numel, 1) // self.cols
        self.gram = None
        self.offset = 0
        self.t = None

    def wants_pass(self) -> bool:
        return self.t is None

    def observe(self, args) -> None:
        if self.gram is None:
            n = len(args) - 1
            self.gram = torch.zeros((self.rows, n, n), dtype=torch.float64, device=args[0].device)
        _add_gram_(self.gram, args, self.offset, self.cols, _work_dtype(*args))
        self.offset += args[0].numel()

    def end_pass(self) -> None:
        self.t = _model_stock_ratio(self.gram)
        self.offset = 0

    def apply(self, args):
        out = _model_stock_combine(args, self.t, self.cols, self.offset, _work_dtype(*args))
        self.offset += args[0].numel()
        return _finish(out, args[0])


@merge_method(formula="base + t·(mean(mᵢ) − base),  t = N·cos θ / (1 + (N − 1)·cos θ),  "
                      "cos θ = max(0, mean over pairs of cos(mᵢ − base, mⱼ − base))",
              family="consensus", min_models=3, streamed=_ModelStockStream)
def model_stock(base: Weight, *models: Weight, filter_wise: Bool() = False) -> Weight:
    """Model Stock (Jang et al. 2024): move from the base towards the fine-tuned average by a ratio
    set by the angle between the fine-tuned models' deltas.

    With N fine-tuned models, cos θ is the mean over pairs i < j of the cosine between mᵢ − base
    and mⱼ − base, and t = N·cos θ / (1 + (N − 1)·cos θ): the result is t·mean(mᵢ) + (1 − t)·base.
    Needs the base and at least two fine-tuned models. filter_wise=true takes one angle (and one
    t) per output row (the tensor as (shape[0], −1)); otherwise one for the whole tensor.

    Compared with peers: mergekit's `model_stock` takes the mean of pairwise cosines for N > 2 too
    (its filter_wise groups the last dimension), with two differences: cos θ is clamped at 0 from
    below here, so t stays in [0, 1] (the paper's geometry assumes acute angles, and the formula
    has a pole at cos θ = −1/(N − 1): deltas that point apart give the base, not a huge
    extrapolation); and a zero delta has cosine 0 with everything (mergekit clamps the norm
    product at 1e-6, which also shrinks the cosine of small but non-zero deltas). Neither can be
    switched off: on acute angles and non-zero deltas the results agree.
    """
    dtype = _work_dtype(base, *models)
    shape = base.shape
    if base.numel() == 0:
        return base.clone()
    for m in models:
        if m.shape != shape:
            raise ValueError(f"shape mismatch: {tuple(shape)} and {tuple(m.shape)}")
    cols = _model_stock_cols(tuple(shape), bool(filter_wise))
    flat = [t.reshape(-1) for t in (base, *models)]
    gram = torch.zeros((base.numel() // cols, len(models), len(models)), dtype=torch.float64, device=base.device)
    _add_gram_(gram, flat, 0, cols, dtype)
    return _finish(_model_stock_combine(flat, _model_stock_ratio(gram), cols, 0, dtype), base)


def _centred_gram(X, chunk: int = 1 << 16):
    """G = Y·Yᵀ in float64 for the rows of X (n, N) centred on their column means, a block of
    columns at a time (bounded scratch memory)."""
    n, N = X.shape
    gram = torch.zeros((n, n), dtype=torch.float64, device=X.device)
    for lo in range(0, N, chunk):
        Y = X[:, lo:lo + chunk].to(torch.float64, copy=True)  # X itself must stay
        Y -= Y.mean(0)
        gram += Y @ Y.mT
    return gram.cpu()


@merge_method(formula="argmin_m Σᵢ ‖mᵢ − m‖₂   (Weiszfeld: m ← Σᵢ mᵢ/dᵢ / Σᵢ 1/dᵢ, dᵢ = max(‖mᵢ − m‖, eps))",
              family="consensus")
def geometric_median(*models: Same, eps: Float(0.0, lo_open=True) = 1e-6, max_iter: Int(0) = 100,
                     ftol: Float(0.0) = 1e-10) -> Same:
    """The geometric median of the models' tensors (each key's tensor a point in ℝᴺ), by
    Weiszfeld's iterations from the mean.

    Each iteration reweights the models by 1 / max(‖mᵢ − m‖₂, eps); it stops after `max_iter`
    iterations or when the objective Σᵢ ‖mᵢ − m‖ changes by at most ftol × its value. sd-mecha's
    `geometric_median` (which names max_iter `maxiter`). Robust to one outlier model where the
    mean is not. Distances come from the models' Gram matrix, in float64.
    """
    dtype = _work_dtype(*models)
    if models[0].numel() == 0 or all(torch.equal(models[0], m) for m in models[1:]):
        return models[0]
    X = _stack(models, dtype)
    if int(max_iter) == 0:
        return _finish(X.mean(0), models[0])
    # Every iterate is a combination m = Σⱼ wⱼ·Xⱼ with Σⱼ wⱼ = 1, so its distances to the models
    # follow from the models' Gram matrix alone: with Y the models minus any common centre,
    # ‖Xᵢ − m‖² = (eᵢ − w)ᵀ·G·(eᵢ − w), G = Y·Yᵀ. One pass over the tensor builds G (in float64,
    # centred on the mean so that no large norms cancel), the iterations are n×n arithmetic, and
    # one more pass forms the median: not two passes over all models per iteration.
    gram = _centred_gram(X)
    n = X.shape[0]
    eye = torch.eye(n, dtype=torch.float64)

    def distances(w):
        diff = eye - w  # row i: eᵢ − w
        return torch.einsum("ij,jk,ik->i", diff, gram, diff).clamp_min_(0).sqrt_()

    w = torch.full((n,), 1.0 / n, dtype=torch.float64)  # the mean
    d = distances(w)
    objective = float(d.sum())
    for _ in range(int(max_iter)):
        inv = 1.0 / d.clamp_min(float(eps))
        w = inv / inv.sum()
        d = distances(w)
        new = float(d.sum())
        if abs(objective - new) <= float(ftol) * new:
            break
        objective = new
    median = w.to(device=X.device, dtype=dtype) @ X
    return _finish(median, models[0])
