"""The Stable Diffusion merger family: methods from supermerger, sd-meh and sd-mecha.

Formulas and parameter names follow those tools (α and β as their UIs call them); each docstring
names its source, and where the tools disagree, which convention is followed. Three-model methods
take `a` (the model merged into), `b` (the model whose features are added) and `c` (the base
that `b` was trained from), as in supermerger's A, B, C.

Methods compute in float32 (float64 inputs stay float64) and return the first input's dtype.
"""

import math

from ._lazy import torch
from .linear import _down, _up
from .registry import Float, Same, Weight, merge_method

# ------------------------------------------------------------------------------------------------
# Helpers


def _cosine(x, y, dim, eps=1e-8):
    """Cosine similarity along `dim`: x·y / (max(|x|, ε)·max(|y|, ε)) (torch's convention)."""
    dot = (x * y).sum(dim)
    nx = torch.linalg.vector_norm(x, dim=dim).clamp(min=eps)
    ny = torch.linalg.vector_norm(y, dim=dim).clamp(min=eps)
    return dot / (nx * ny)


def _symmetric_index(n: int, radius: int, device):
    """Indices of positions −radius .. n+radius−1 of a length-n axis extended by mirror
    reflection about the edges (d c b a | a b c d | d c b a): scipy.ndimage's mode 'reflect'."""
    i = torch.arange(-radius, n + radius, device=device)
    m = torch.remainder(i, 2 * n)
    return torch.where(m < n, m, 2 * n - 1 - m)


_MEDIAN_CHUNK = 1 << 24  # window elements gathered at once by the general median filter


def _med3(x, y, z):
    """Elementwise median of three tensors (exact: min/max only)."""
    return torch.maximum(torch.minimum(x, y), torch.minimum(torch.maximum(x, y), z))


def _median_filter3(x):
    """scipy.ndimage.median_filter(x, size=3): the median of the 3×3×… neighbourhood of every
    element, edges extended by reflection. Axes of length 1 are skipped (along them the window
    only repeats the element, which leaves every median unchanged)."""
    y = x.squeeze()
    if y.dim() == 0:
        return x.clone()
    d = y.dim()
    padded = y
    for dim in range(d):
        padded = padded.index_select(dim, _symmetric_index(y.shape[dim], 1, y.device))
    if d == 1:
        n = y.shape[0]
        return _med3(padded[:n], padded[1:n + 1], padded[2:n + 2]).reshape(x.shape)
    if d == 2:
        # The exact 3×3 median from sorted row triples: the median of (the largest row minimum,
        # the median of the row medians, the smallest row maximum).
        n0, n1 = y.shape
        h0, h1, h2 = padded[:, :n1], padded[:, 1:n1 + 1], padded[:, 2:n1 + 2]
        lo = torch.minimum(torch.minimum(h0, h1), h2)
        hi = torch.maximum(torch.maximum(h0, h1), h2)
        mid = _med3(h0, h1, h2)
        rows = [slice(0, n0), slice(1, n0 + 1), slice(2, n0 + 2)]
        max_lo = torch.maximum(torch.maximum(lo[rows[0]], lo[rows[1]]), lo[rows[2]])
        min_hi = torch.minimum(torch.minimum(hi[rows[0]], hi[rows[1]]), hi[rows[2]])
        med_mid = _med3(mid[rows[0]], mid[rows[1]], mid[rows[2]])
        return _med3(max_lo, med_mid, min_hi).reshape(x.shape)
    out = torch.empty_like(y)
    per_row = 3 ** d * (y[0].numel())
    step = max(1, _MEDIAN_CHUNK // per_row)
    for start in range(0, y.shape[0], step):
        stop = min(y.shape[0], start + step)
        window = padded[start:stop + 2]
        for dim in range(d):
            window = window.unfold(dim, 3, 1)
        out[start:stop] = window.reshape(*window.shape[:d], -1).median(dim=-1).values
    return out.reshape(x.shape)


def _gaussian_filter(x, sigma: float = 1.0, truncate: float = 4.0):
    """scipy.ndimage.gaussian_filter(x, sigma): a separable Gaussian blur along every axis, kernel
    exp(−k²/2σ²) normalized over |k| ≤ ⌊truncate·σ + 0.5⌋, edges extended by reflection. Axes of
    length 1 are skipped (the blur leaves them unchanged)."""
    y = x.squeeze()
    if y.dim() == 0:
        return x.clone()
    radius = int(truncate * sigma + 0.5)
    weights = [math.exp(-0.5 * (k / sigma) ** 2) for k in range(-radius, radius + 1)]
    total = sum(weights)
    weights = [w / total for w in weights]
    for dim in range(y.dim()):
        n = y.shape[dim]
        padded = y.index_select(dim, _symmetric_index(n, radius, y.device))
        blurred = padded.narrow(dim, 0, n) * weights[0]
        for j in range(1, len(weights)):
            blurred.add_(padded.narrow(dim, j, n), alpha=weights[j])
        y = blurred
    return y.reshape(x.shape)


def _smooth(x):
    """supermerger's smoothing of a difference: a 3-wide median filter, then a σ = 1 Gaussian."""
    return _gaussian_filter(_median_filter3(x), 1.0)


def _region(width: float, offset: float, n: int):
    """sd-mecha's `ratio_to_region`: the index range [start, end) covering the fraction `width` of
    n positions from `offset`, wrapping around the end; `inverted` when it wraps (then [start, end)
    is the complement)."""
    if width < 0:
        offset += width
        width = -width
    width = min(width, 1.0)
    if offset < 0:
        offset = 1 + offset - int(offset)
    offset = math.fmod(offset, 1.0)
    if width + offset <= 1:
        return round(offset * n), round((width + offset) * n), False
    return round((width + offset - 1) * n), round(offset * n), True


def _frequency_mesh(shape, device, dtype):
    """For the output of rfftn over a tensor of `shape`: every bin's frequency magnitude in
    [0, 1], the root mean square over axes of |kᵢ| / ⌊nᵢ/2⌋ (0 on axes of length 1). Built in
    float64 by the callers, so that bins exactly on the cut (m = 1 − α) fall on the same side as
    in exact arithmetic."""
    axes = []
    for i, n in enumerate(shape):
        if i == len(shape) - 1:
            k = torch.arange(n // 2 + 1, device=device, dtype=dtype)  # rfft: non-negative only
        else:
            k = torch.fft.fftfreq(n, d=1.0 / n, device=device, dtype=dtype).abs()
        axes.append(k / (n // 2) if n // 2 else torch.zeros_like(k))
    if len(axes) == 1:
        return axes[0]
    grids = torch.meshgrid(*(g * g for g in axes), indexing="ij")
    return (sum(grids) / len(axes)).sqrt()


def _crossover_filter(mesh, alpha: float, tilt: float):
    """sd-mecha's crossover filter over frequency magnitudes `mesh` ∈ [0, 1]: the weight of `b`
    per frequency. The cut line (value 0 → 1 along increasing frequency) is tilted by `tilt` (0: a
    hard cut at 1 − α, high frequencies from `b`; 1: a flat α, the weighted sum; 2: a hard cut
    with low frequencies from `b`; 2..4 mirrors 0..2 with α ↦ 1 − α, and the filter inverted)."""
    tilt = tilt - math.floor(tilt / 4) * 4
    inverted = tilt > 2
    if inverted:
        alpha = 1 - alpha
    if tilt < 1e-10 or abs(tilt - 4) < 1e-10:
        f = (mesh > 1 - alpha).to(mesh.dtype)
    elif abs(tilt - 2) < 1e-10:
        f = (mesh < 1 - alpha).to(mesh.dtype)
    else:
        cot = 1 / math.tan(math.pi * tilt / 2)
        if tilt <= 1 or 2 < tilt <= 3:
            f = cot * (mesh - 1 + alpha) + alpha
        else:
            f = cot * (mesh - alpha) + alpha
        f = f.clamp(0.0, 1.0)
    return 1 - f if inverted else f


# ------------------------------------------------------------------------------------------------
# Add-difference variants


@merge_method(formula="a + α·1.8·(b − c)·|b − a| / (|b − a| + |b − c|)", family="sd_mergers", elementwise=True)
def train_difference(a: Same, b: Same, c: Same, *, alpha: Float() = 1.0) -> Same:
    """supermerger's "train difference": add b − c to a as if fine-tuning a towards b.

    a + α·1.8·(b − c)·|b − a| / (|b − a| + |b − c|), the fraction taken as 0 where both distances
    are 0. Where `a` already equals `b` nothing is added; where `a` is far from `b` compared to
    `c`, up to 1.8× the difference. Same formula as sd-mecha's `train_difference`.
    """
    (a, b, c), dtype = _up(a, b, c)
    to_a = (b - a).abs()
    diff = b - c
    total = to_a + diff.abs()
    scale = torch.where(total > 0, to_a / torch.where(total > 0, total, torch.ones_like(total)),
                        torch.zeros_like(total))
    return _down(a + (1.8 * float(alpha)) * diff * scale, dtype)


@merge_method(formula="a + α·gauss_σ=1(median_3(b − c))", family="sd_mergers")
def smooth_add_difference(a: Weight, b: Weight, c: Weight, *, alpha: Float() = 1.0) -> Weight:
    """supermerger's "smoothAdd": add b − c after smoothing it, to avoid burning when many
    differences are added.

    a + α·G(M(b − c)): M is a median filter over the 3×3×… neighbourhood of each element and G a
    Gaussian blur with σ = 1 (radius 4), both over all axes of the tensor with edges reflected
    — scipy.ndimage's median_filter(size=3) and gaussian_filter(sigma=1), as supermerger calls
    them. Axes of length 1 are left alone (the filters are the identity along them).
    Cost: 1-D and 2-D tensors (1×1 convolutions included) take an exact min/max network; 3×3
    convolution kernels need the median of 81 values per element, about as slow on a CPU as
    scipy's filter (supermerger's own) and much faster with `--device cuda`.
    """
    (a_w, b_w, c_w), dtype = _up(a, b, c)
    if a.numel() == 0:
        return _down(a_w.clone(), dtype)
    return _down(a_w + float(alpha) * _smooth(b_w - c_w), dtype)


@merge_method(formula="a + α·(Δb − Δa·(Δa·Δb)/(Δa·Δa)),  Δa = a − c, Δb = b − c", family="sd_mergers")
def add_perpendicular(a: Weight, b: Weight, c: Weight, *, alpha: Float() = 1.0) -> Weight:
    """sd-meh/sd-mecha's `add_perpendicular`: add only the part of b − c orthogonal to a − c.

    a + α·(Δb − Δa·(Δa·Δb)/(Δa·Δa)) with Δa = a − c, Δb = b − c over the flattened tensors.
    Where a = c (Δa = 0, nothing to be orthogonal to) the whole Δb is added; sd-meh returns `a`
    unchanged there (its NaN fallback).
    """
    (a, b, c), dtype = _up(a, b, c)
    da, db = a - c, b - c
    return _down(a + float(alpha) * _perpendicular(da, db), dtype)


def _perpendicular(a, b):
    """b minus its projection on a (over the flattened tensors); b itself when a = 0."""
    aa = torch.sum(a * a)
    if float(aa) == 0.0:
        return b.clone()
    return b - a * (torch.sum(a * b) / aa)


@merge_method(formula="b − a·(a·b)/(a·a)", family="sd_mergers")
def perpendicular_component(a: Same, b: Same) -> Same:
    """sd-mecha's `perpendicular_component`: the component of b orthogonal to a.

    b − a·(a·b)/(a·a) over the flattened tensors. For a = 0 the result is b (its projection on the
    zero vector is zero); sd-mecha returns zeros there (its NaN fallback).
    """
    (a, b), dtype = _up(a, b)
    return _down(_perpendicular(a, b), dtype)


@merge_method(formula="c + d·|s|/|d|,  d = sign(s)·√((1 − α)·â² + α·b̂²),  "
                      "s = (1 − α)a + αb − c,  x̂ = (x − c)/|x − c|", family="sd_mergers")
def euclidean_add_difference(a: Weight, b: Weight, c: Weight, *, alpha: Float(0.0, 1.0) = 0.5) -> Weight:
    """sd-meh's `euclidean_add_difference`: combine the differences a − c and b − c by an
    elementwise Euclidean mean of their normalized magnitudes.

    With â = (a − c)/|a − c| and b̂ = (b − c)/|b − c| (norms over the flattened tensor, 0 for a
    zero difference), s = (1 − α)·a + α·b − c:
    d = sign(s)·√((1 − α)·â² + α·b̂²), and the result is c + d·|s|/|d| — the direction of the
    elementwise mean, the norm of the weighted sum's difference. α = 0 gives a, α = 1 gives b.
    Where d = 0 (a = b = c) the result is c.
    """
    (a, b, c), dtype = _up(a, b, c)
    t = float(alpha)

    def unit(x):
        n = torch.linalg.vector_norm(x)
        return x / n if float(n) > 0 else torch.zeros_like(x)

    da, db = unit(a - c), unit(b - c)
    summed = (1.0 - t) * a + t * b - c
    d = torch.copysign(torch.sqrt((1.0 - t) * da * da + t * db * db), summed)
    dn = torch.linalg.vector_norm(d)
    if float(dn) == 0.0:
        return _down(c.clone(), dtype)
    return _down(c + d * (torch.linalg.vector_norm(summed) / dn), dtype)


@merge_method(formula="c + sign((1 − β)a + βb − c)·|a − c|^(1 − α)·|b − c|^α", family="sd_mergers", elementwise=True)
def multiply_difference(a: Weight, b: Weight, c: Weight, *, alpha: Float(0.0, 1.0) = 0.5,
                        beta: Float(0.0, 1.0) = 0.5) -> Weight:
    """sd-meh's `multiply_difference`: a geometric mean of the two differences' magnitudes.

    c + sign((1 − β)·a + β·b − c)·|a − c|^(1 − α)·|b − c|^α, elementwise: α weighs the
    magnitudes (geometrically), β picks the sign from a weighted sum. 0⁰ = 1.
    """
    (a, b, c), dtype = _up(a, b, c)
    t, s = float(alpha), float(beta)
    magnitude = torch.pow((a - c).abs(), 1.0 - t) * torch.pow((b - c).abs(), t)
    return _down(c + torch.copysign(magnitude, (1.0 - s) * a + s * b - c), dtype)


@merge_method(formula="(1 − s)·(a + α(b − c)) + s·((1 − α/2)a + (α/2)b),  s = β·(ab/max(|a|,|b|)² + 1)/2",
              family="sd_mergers", elementwise=True)
def similarity_add_difference(a: Weight, b: Weight, c: Weight, *, alpha: Float() = 1.0,
                              beta: Float(0.0, 1.0) = 1.0) -> Weight:
    """sd-meh's `similarity_add_difference`: add difference where a and b disagree, average where
    they agree.

    Elementwise similarity s = β·(a·b / max(|a|, |b|)² + 1)/2 (1 where a = b, 0 where a = −b; β
    where both are 0), then (1 − s)·(a + α·(b − c)) + s·((1 − α/2)·a + (α/2)·b).
    """
    (a, b, c), dtype = _up(a, b, c)
    t, s = float(alpha), float(beta)
    threshold = torch.maximum(a.abs(), b.abs())
    nonzero = threshold > 0
    safe = torch.where(nonzero, threshold, torch.ones_like(threshold))
    similarity = torch.where(nonzero, (a * b / (safe * safe) + 1.0) / 2.0 * s,
                             torch.full_like(threshold, s))
    added = a + t * (b - c)
    averaged = (1.0 - t / 2) * a + (t / 2) * b
    return _down(torch.lerp(added, averaged, similarity), dtype)


@merge_method(formula="a + lerp(b − a, c − a, α)·lerp(d, 1 − d, β),  d = ((cos(b − a, c − a) + 1)/2)^γ",
              family="sd_mergers")
def extract(a: Weight, b: Weight, c: Weight, *, alpha: Float(0.0, 1.0) = 0.5,
            beta: Float(0.0, 1.0) = 0.0, gamma: Float(0.0, None) = 1.0) -> Weight:
    """supermerger's "extract" (`extract_super`): add to a the features that b and c share
    (β = 0) or the ones where they differ (β = 1).

    With the differences Δb = b − a and Δc = c − a, their cosine similarity along the last
    dimension (per row of a matrix, per kernel row of a convolution, the whole vector for a 1-D
    tensor, as supermerger computes it), d = ((cos + 1)/2)^γ, the result is
    a + ((1 − α)·Δb + α·Δc)·((1 − β)·d + β·(1 − d)). α weighs c against b, γ sharpens the
    similarity. Rows of zeros have cosine 0.
    """
    (a_w, b_w, c_w), dtype = _up(a, b, c)
    if a.numel() == 0:
        return _down(a_w.clone(), dtype)
    shape = a.shape
    if a.dim() == 0:
        a_w, b_w, c_w = a_w.reshape(1), b_w.reshape(1), c_w.reshape(1)
    db, dc = b_w - a_w, c_w - a_w
    cos = _cosine(db, dc, dim=-1).clamp(-1.0, 1.0).unsqueeze(-1)
    d = ((cos + 1.0) / 2.0) ** float(gamma)
    mask = torch.lerp(d, 1.0 - d, float(beta))
    return _down((a_w + torch.lerp(db, dc, float(alpha)) * mask).reshape(shape), dtype)


# ------------------------------------------------------------------------------------------------
# Similarity-weighted sums


def _cosine_merge(a, b, alpha: float, similarity):
    k = 1.0 - (similarity - alpha).clamp(0.0, 1.0)
    return a + k * (b - a)


@merge_method(formula="lerp(a, b, 1 − clamp(cos₀(a, b) − α, 0, 1))", family="sd_mergers")
def cosine_a(a: Weight, b: Weight, *, alpha: Float(0.0, 1.0) = 0.5) -> Weight:
    """supermerger's "cosineA" (sd-mecha's `add_cosine_a`): a weighted sum whose weight follows the
    similarity of the two models, favouring a's structure.

    cos₀ is the cosine similarity of a and b along the first dimension (one value per column of
    a matrix; one for a 1-D tensor), k = 1 − clamp(cos₀ − α, 0, 1), result (1 − k)·a + k·b.
    Columns that agree closely keep more of a. supermerger also rescales the similarity by its
    1st..99th percentile range over the whole model; like sd-mecha, this works per key and does not.
    """
    (a_w, b_w), dtype = _up(a, b)
    shape = a.shape
    if a.dim() == 0:
        a_w, b_w = a_w.reshape(1), b_w.reshape(1)
    sim = _cosine(a_w, b_w, dim=0)
    return _down(_cosine_merge(a_w, b_w, float(alpha), sim).reshape(shape), dtype)


@merge_method(formula="lerp(a, b, 1 − clamp((cos₀(a, b) + cos(a, b))/2 − α, 0, 1))", family="sd_mergers")
def cosine_b(a: Weight, b: Weight, *, alpha: Float(0.0, 1.0) = 0.5) -> Weight:
    """supermerger's "cosineB" (sd-mecha's `add_cosine_b`): like `cosine_a`, with the similarity
    averaged with the cosine of the whole flattened tensors, favouring b's structure.

    s = (cos₀(a, b) + a·b/(|a||b|))/2, k = 1 − clamp(s − α, 0, 1), result (1 − k)·a + k·b.
    The whole-tensor cosine is 0 when a or b is zero.
    """
    (a_w, b_w), dtype = _up(a, b)
    shape = a.shape
    if a.dim() == 0:
        a_w, b_w = a_w.reshape(1), b_w.reshape(1)
    per_column = _cosine(a_w, b_w, dim=0)
    norms = torch.linalg.vector_norm(a_w) * torch.linalg.vector_norm(b_w)
    whole = torch.sum(a_w * b_w) / norms if float(norms) > 0 else torch.zeros((), dtype=a_w.dtype,
                                                                              device=a_w.device)
    sim = (per_column + whole) / 2.0
    return _down(_cosine_merge(a_w, b_w, float(alpha), sim).reshape(shape), dtype)


@merge_method(formula="Re(a^(1 − α)·b^α)", family="sd_mergers", elementwise=True)
def geometric_sum(a: Same, b: Same, *, alpha: Float(0.0, 1.0) = 0.5) -> Same:
    """sd-mecha's `geometric_sum`: the weighted geometric mean, taken on the complex plane so
    negative values work, then projected back to the reals.

    Re(a^(1 − α)·b^α) = |a|^(1 − α)·|b|^α·cos(π·((1 − α)·[a < 0] + α·[b < 0])), elementwise
    (principal powers, 0⁰ = 1). Equal inputs give themselves; a zero on either side gives zero
    (for 0 < α < 1) — a soft AND of the two models.
    """
    (a, b), dtype = _up(a, b)
    t = float(alpha)
    magnitude = torch.pow(a.abs(), 1.0 - t) * torch.pow(b.abs(), t)
    phase = math.pi * ((1.0 - t) * (a < 0).to(a.dtype) + t * (b < 0).to(a.dtype))
    return _down(magnitude * torch.cos(phase), dtype)


# ------------------------------------------------------------------------------------------------
# Slicing


@merge_method(formula="a with b's slice [n·β, n·(α + β)) along dim 0 (wrapping)", family="sd_mergers")
def tensor_sum(a: Same, b: Same, *, alpha: Float(0.0, 1.0) = 0.5, beta: Float(0.0, 1.0) = 0.0) -> Same:
    """supermerger's "tensor" merge (sd-mecha's `tensor_sum`): copy a slice of b's first dimension
    into a.

    Of the n rows along dim 0, those in [round(n·β), round(n·(α + β))) come from b, the others
    from a; when α + β > 1 the slice wraps past the end (the rows in [round(n·(α + β − 1)),
    round(n·β)) come from a and the others from b). α is the width of b's share, β its offset
    (sd-mecha's `width` and `offset`). Indices are rounded as sd-mecha does; supermerger truncates.
    A 0-d tensor is b when α > 0.5, else a (sd-mecha; supermerger leaves it as a).
    """
    (a_w, b_w), dtype = _up(a, b)
    if a.dim() == 0:
        return _down((b_w if float(alpha) > 0.5 else a_w).clone(), dtype)
    start, end, inverted = _region(float(alpha), float(beta), a.shape[0])
    if inverted:
        out = b_w.clone()
        out[start:end] = a_w[start:end]
    else:
        out = a_w.clone()
        out[start:end] = b_w[start:end]
    return _down(out, dtype)


def _kth_abs(x, k: int):
    """The k-th smallest |x| (1-based), or −1 for k ≤ 0 (below every magnitude)."""
    if k <= 0:
        return -1.0
    return torch.kthvalue(x.abs(), k).values


@merge_method(formula="a's sorted values placed in b's order, where their |value| rank is "
                      "in [n·β, n·(α + β)]", family="sd_mergers")
def top_k_tensor_sum(a: Same, b: Same, *, alpha: Float(0.0, 1.0) = 1.0, beta: Float(0.0, 1.0) = 0.0) -> Same:
    """sd-mecha's `top_k_tensor_sum`: give b's ordering to a's values, within a band of magnitudes.

    a's values, sorted, are redistributed so that the r-th smallest lands where b has its r-th
    smallest value (ties in b keep index order). That redistributed value replaces a's where its
    magnitude lies between the k₀-th and k₁-th smallest magnitudes of a, inclusive, with
    [k₀, k₁] = [round(n·β), round(n·(α + β))] (k₀ = 0: no lower limit), wrapping as in
    `tensor_sum` (then the band is the complement). The default (α = 1, β = 0) redistributes
    every value: a's distribution in b's arrangement.
    """
    (a_w, b_w), dtype = _up(a, b)
    n = a.numel()
    if n == 0:
        return _down(a_w.clone(), dtype)
    a_flat, b_flat = a_w.reshape(-1), b_w.reshape(-1)
    redistributed = torch.empty_like(a_flat)
    redistributed[torch.argsort(b_flat, stable=True)] = torch.sort(a_flat).values
    start, end, inverted = _region(float(alpha), float(beta), n)
    lo, hi = _kth_abs(a_flat, start), _kth_abs(a_flat, end)
    magnitude = redistributed.abs()
    band = (magnitude >= lo) & (magnitude <= hi)
    if inverted:
        band = ~band
    return _down(torch.where(band, redistributed, a_flat).reshape(a.shape), dtype)


# ------------------------------------------------------------------------------------------------
# Frequency-domain crossovers


@merge_method(formula="irfftn((1 − F)·rfftn(a) + F·rfftn(b)),  F = filter(|frequency|; α, tilt)",
              family="sd_mergers")
def crossover(a: Same, b: Same, *, alpha: Float(0.0, 1.0) = 0.5, tilt: Float(0.0, 4.0) = 0.0) -> Same:
    """sd-mecha's `crossover`: mix a and b per spatial frequency.

    Both tensors go through an N-dimensional real FFT; each frequency bin, of normalized
    magnitude m ∈ [0, 1] (the root mean square over axes of |kᵢ|/⌊nᵢ/2⌋), takes the weight
    F(m) of b and 1 − F(m) of a; the inverse FFT gives the result. With tilt 0, F = [m > 1 − α]:
    the highest frequencies (a share α of the magnitude range) come from b. A tilt in (0, 1)
    slopes the cut line (F = clamp(cot(π·tilt/2)·(m − 1 + α) + α, 0, 1)); tilt 1 is the weighted
    sum with α; tilt 2 takes the lowest frequencies from b; 2..4 repeats 0..2 with α ↦ 1 − α
    and F ↦ 1 − F. α = 0 gives a, α = 1 gives b (sd-mecha's shortcuts). A 0-d tensor is one bin
    of frequency 0; sd-mecha returns (1 − tilt)·a + tilt·b there instead.
    """
    (a_w, b_w), dtype = _up(a, b)
    t = float(alpha)
    if t == 0.0:
        return _down(a_w.clone(), dtype)
    if t == 1.0:
        return _down(b_w.clone(), dtype)
    if float(tilt) == 1.0 or a.numel() == 0:
        return _down(torch.lerp(a_w, b_w, t), dtype)
    if torch.equal(a_w, b_w):
        return _down(a_w.clone(), dtype)
    shape = a.shape
    x, y = (a_w.reshape(1), b_w.reshape(1)) if a.dim() == 0 else (a_w, b_w)
    fa, fb = torch.fft.rfftn(x), torch.fft.rfftn(y)
    f = _crossover_filter(_frequency_mesh(x.shape, x.device, torch.float64), t, float(tilt)).to(x.dtype)
    mixed = torch.fft.irfftn(fa + f * (fb - fa), s=x.shape)
    return _down(mixed.reshape(shape), dtype)


@merge_method(formula="a and b sorted by c, crossed over in frequency, unsorted", family="sd_mergers")
def distribution_crossover(a: Same, b: Same, c: Same, *, alpha: Float(0.0, 1.0) = 0.5,
                           tilt: Float(0.0, 4.0) = 0.0) -> Same:
    """sd-meh/sd-mecha's `distribution_crossover`: a frequency crossover of a and b along the
    order of c's values.

    The flattened a and b are permuted into the order that sorts c (a stable sort: equal values
    of c keep their index order, where sd-mecha's order among ties is unspecified), crossed over as in
    `crossover` with a 1-D real FFT (bin k of K has magnitude k/(K − 1)), and put back in place.
    α = 0 gives a, α = 1 gives b, tilt 1 the weighted sum. 0-d tensors are one bin of frequency
    0; sd-mecha returns the weighted sum there instead. sd-mecha requires α and tilt; the defaults
    here are `crossover`'s.
    """
    (a_w, b_w, c_w), dtype = _up(a, b, c)
    t = float(alpha)
    if t == 0.0:
        return _down(a_w.clone(), dtype)
    if t == 1.0:
        return _down(b_w.clone(), dtype)
    if float(tilt) == 1.0 or a.numel() == 0:
        return _down(torch.lerp(a_w, b_w, t), dtype)
    order = torch.argsort(c_w.reshape(-1), stable=True)  # ties keep index order: deterministic
    a_sorted, b_sorted = a_w.reshape(-1)[order], b_w.reshape(-1)[order]
    n = a_sorted.shape[0]
    fa, fb = torch.fft.rfft(a_sorted), torch.fft.rfft(b_sorted)
    f = _crossover_filter(_frequency_mesh((n,), a_w.device, torch.float64), t, float(tilt)).to(a_w.dtype)
    mixed = torch.fft.irfft(fa + f * (fb - fa), n=n)
    out = torch.empty_like(mixed)
    out[order] = mixed
    return _down(out.reshape(a.shape), dtype)
