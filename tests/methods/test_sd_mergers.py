"""SD-merger methods against straightforward numpy implementations of their formulas."""

import itertools
import math

import numpy as np
import pytest
import torch

from mechalang.methods import sd_mergers as M

from ._blend_helpers import EMPTY_SHAPES, SHAPES, assert_matches, npy, rand, rands, signature

ALL_SHAPES = SHAPES + EMPTY_SHAPES


# ------------------------------------------------------------------------------------------------
# Registered signatures

SIGNATURES = {
    "train_difference": "train_difference(a: same, b: same, c: same, alpha: float = 1.0) -> same",
    "smooth_add_difference": "smooth_add_difference(a: weight, b: weight, c: weight, alpha: float = 1.0) -> weight",
    "add_perpendicular": "add_perpendicular(a: weight, b: weight, c: weight, alpha: float = 1.0) -> weight",
    "perpendicular_component": "perpendicular_component(a: same, b: same) -> same",
    "euclidean_add_difference": "euclidean_add_difference(a: weight, b: weight, c: weight, "
                                "alpha: float in [0, 1] = 0.5) -> weight",
    "multiply_difference": "multiply_difference(a: weight, b: weight, c: weight, alpha: float in [0, 1] = 0.5, "
                           "beta: float in [0, 1] = 0.5) -> weight",
    "similarity_add_difference": "similarity_add_difference(a: weight, b: weight, c: weight, alpha: float = 1.0, "
                                 "beta: float in [0, 1] = 1.0) -> weight",
    "extract": "extract(a: weight, b: weight, c: weight, alpha: float in [0, 1] = 0.5, "
               "beta: float in [0, 1] = 0.0, gamma: float in [0, inf] = 1.0) -> weight",
    "cosine_a": "cosine_a(a: weight, b: weight, alpha: float in [0, 1] = 0.5) -> weight",
    "cosine_b": "cosine_b(a: weight, b: weight, alpha: float in [0, 1] = 0.5) -> weight",
    "geometric_sum": "geometric_sum(a: same, b: same, alpha: float in [0, 1] = 0.5) -> same",
    "tensor_sum": "tensor_sum(a: same, b: same, alpha: float in [0, 1] = 0.5, beta: float in [0, 1] = 0.0) -> same",
    "top_k_tensor_sum": "top_k_tensor_sum(a: same, b: same, alpha: float in [0, 1] = 1.0, "
                        "beta: float in [0, 1] = 0.0) -> same",
    "crossover": "crossover(a: same, b: same, alpha: float in [0, 1] = 0.5, tilt: float in [0, 4] = 0.0) -> same",
    "distribution_crossover": "distribution_crossover(a: same, b: same, c: same, alpha: float in [0, 1] = 0.5, "
                              "tilt: float in [0, 4] = 0.0) -> same",
}
ELEMENTWISE = {"train_difference", "multiply_difference", "similarity_add_difference", "geometric_sum"}


@pytest.mark.parametrize("name", sorted(SIGNATURES))
def test_signature(name):
    spec = signature(name)
    assert spec.signature() == SIGNATURES[name]
    assert spec.family == "sd_mergers" and spec.formula and spec.doc
    assert spec.elementwise == (name in ELEMENTWISE)


@pytest.mark.parametrize("name", sorted(ELEMENTWISE))
def test_elementwise_methods_commute_with_slicing(name):
    spec = signature(name)
    args = rands(len(spec.models), (4, 5, 3), seed=99)
    whole = spec.func(*args).reshape(-1)
    flat = [x.reshape(-1) for x in args]
    parts = torch.cat([spec.func(*[x[i:i + 17] for x in flat]) for i in range(0, 60, 17)])
    torch.testing.assert_close(parts, whole)


# ------------------------------------------------------------------------------------------------
# train_difference


def _train_difference_ref(a, b, c, alpha):
    A, B, C = npy(a), npy(b), npy(c)
    out = A.copy()
    for i in np.ndindex(A.shape):
        to_a, diff = abs(B[i] - A[i]), B[i] - C[i]
        total = to_a + abs(diff)
        out[i] = A[i] + alpha * 1.8 * diff * (to_a / total if total else 0.0)
    return out


@pytest.mark.parametrize("shape", ALL_SHAPES)
@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0, -0.5])
def test_train_difference(shape, alpha):
    a, b, c = rands(3, shape, seed=1)
    assert_matches(M.train_difference(a, b, c, alpha=alpha), _train_difference_ref(a, b, c, alpha), like=a)


def test_train_difference_edge_cases():
    a, b = rands(2, (5, 5), seed=2)
    assert torch.equal(M.train_difference(a, b, b), a)  # no difference to add
    assert torch.equal(M.train_difference(b, b, a), b)  # a already equals b
    zero = torch.zeros(4)
    assert torch.equal(M.train_difference(zero, zero, zero), zero)  # 0/0 taken as 0


# ------------------------------------------------------------------------------------------------
# smooth_add_difference


def _reflect(i, n):
    """scipy.ndimage mode 'reflect' index for position i of an axis of length n."""
    i = i % (2 * n)
    return i if i < n else 2 * n - 1 - i


def _median3_ref(x):
    out = np.empty_like(x)
    offsets = list(itertools.product((-1, 0, 1), repeat=x.ndim))
    for idx in np.ndindex(x.shape):
        vals = [x[tuple(_reflect(i + o, n) for i, o, n in zip(idx, off, x.shape))] for off in offsets]
        out[idx] = sorted(vals)[len(vals) // 2]
    return out


def _gauss_ref(x, sigma=1.0):
    r = int(4.0 * sigma + 0.5)
    w = np.array([math.exp(-0.5 * (k / sigma) ** 2) for k in range(-r, r + 1)])
    w /= w.sum()
    for axis in range(x.ndim):
        y = np.zeros_like(x)
        n = x.shape[axis]
        for idx in np.ndindex(x.shape):
            total = 0.0
            for j, k in enumerate(range(-r, r + 1)):
                src = list(idx)
                src[axis] = _reflect(idx[axis] + k, n)
                total += w[j] * x[tuple(src)]
            y[idx] = total
        x = y
    return x


@pytest.mark.parametrize("shape", [(11,), (6, 7), (3, 4, 5), (3, 2, 3, 3), (5, 4, 1, 1), (2, 1, 3), (1,), ()])
def test_smoothing_filters(shape):
    x = rand(shape, 3)
    X = npy(x)
    assert_matches(M._median_filter3(x), _median3_ref(X), like=x, atol=0, rtol=0)
    assert_matches(M._gaussian_filter(x), _gauss_ref(X), like=x)


def test_smoothing_filters_match_scipy():
    nd = pytest.importorskip("scipy.ndimage")
    for shape in [(11,), (9, 13), (4, 5, 6), (4, 3, 3, 3), (3, 8, 1, 1)]:
        x = rand(shape, 4)
        assert_matches(M._median_filter3(x), nd.median_filter(npy(x), size=3), like=x, atol=0, rtol=0)
        assert_matches(M._smooth(x), nd.gaussian_filter(nd.median_filter(npy(x), size=3), sigma=1), like=x)


def test_median_filter_general_path_chunks(monkeypatch):
    monkeypatch.setattr(M, "_MEDIAN_CHUNK", 200)  # several chunks for a 3-D tensor
    x = rand((7, 3, 4), 5)
    assert_matches(M._median_filter3(x), _median3_ref(npy(x)), like=x, atol=0, rtol=0)


@pytest.mark.parametrize("shape", [(11,), (6, 7), (2, 3, 3, 3), ()] + EMPTY_SHAPES)
@pytest.mark.parametrize("alpha", [0.0, 1.0, 0.7])
def test_smooth_add_difference(shape, alpha):
    a, b, c = rands(3, shape, seed=6)
    ref = npy(a) + alpha * (_gauss_ref(_median3_ref(npy(b) - npy(c))) if a.numel() else 0)
    assert_matches(M.smooth_add_difference(a, b, c, alpha=alpha), ref, like=a)


def test_smooth_add_difference_zero_delta():
    a, b = rands(2, (4, 4), seed=7)
    assert torch.equal(M.smooth_add_difference(a, b, b, alpha=2.0), a)


# ------------------------------------------------------------------------------------------------
# Projections


def _perp_ref(a, b):
    A, B = npy(a).ravel(), npy(b).ravel()
    aa = float(A @ A)
    return B if aa == 0 else B - A * float(A @ B) / aa


@pytest.mark.parametrize("shape", ALL_SHAPES)
def test_perpendicular_component(shape):
    a, b = rands(2, shape, seed=8)
    out = M.perpendicular_component(a, b)
    assert_matches(out, _perp_ref(a, b), like=a)
    if a.numel() > 1:
        assert abs(float((out.double() * a.double()).sum())) < 1e-4 * float(a.norm() * b.norm())


def test_perpendicular_component_edge_cases():
    a = rand((3, 3), 9)
    torch.testing.assert_close(M.perpendicular_component(a, 2 * a), torch.zeros_like(a), atol=1e-6, rtol=0)
    assert torch.equal(M.perpendicular_component(torch.zeros(3, 3), a), a)


@pytest.mark.parametrize("shape", ALL_SHAPES)
@pytest.mark.parametrize("alpha", [0.0, 1.0, 0.5, -1.0])
def test_add_perpendicular(shape, alpha):
    a, b, c = rands(3, shape, seed=10)
    ref = npy(a).ravel() + alpha * _perp_ref(a - c, b - c)
    assert_matches(M.add_perpendicular(a, b, c, alpha=alpha), ref, like=a)


def test_add_perpendicular_edge_cases():
    a, b, c = rands(3, (4, 5), seed=11)
    assert torch.equal(M.add_perpendicular(a, c, c), a)  # zero delta
    # a = c: nothing to be orthogonal to, the whole difference is added
    torch.testing.assert_close(M.add_perpendicular(c, b, c), b)


# ------------------------------------------------------------------------------------------------
# Difference combinations


def _euclidean_ref(a, b, c, alpha):
    A, B, C = npy(a).ravel(), npy(b).ravel(), npy(c).ravel()

    def unit(x):
        n = np.linalg.norm(x)
        return x / n if n > 0 else np.zeros_like(x)

    da, db = unit(A - C), unit(B - C)
    s = (1 - alpha) * A + alpha * B - C
    d = np.copysign(np.sqrt((1 - alpha) * da ** 2 + alpha * db ** 2), s)
    dn = np.linalg.norm(d)
    return C if dn == 0 else C + d / dn * np.linalg.norm(s)


@pytest.mark.parametrize("shape", ALL_SHAPES)
@pytest.mark.parametrize("alpha", [0.0, 0.3, 1.0])
def test_euclidean_add_difference(shape, alpha):
    a, b, c = rands(3, shape, seed=12)
    assert_matches(M.euclidean_add_difference(a, b, c, alpha=alpha), _euclidean_ref(a, b, c, alpha), like=a)


def test_euclidean_add_difference_endpoints_and_degenerate():
    a, b, c = rands(3, (6, 4), seed=13)
    torch.testing.assert_close(M.euclidean_add_difference(a, b, c, alpha=0.0), a)
    torch.testing.assert_close(M.euclidean_add_difference(a, b, c, alpha=1.0), b)
    assert torch.equal(M.euclidean_add_difference(c, c, c, alpha=0.5), c)


def _multiply_ref(a, b, c, alpha, beta):
    A, B, C = npy(a), npy(b), npy(c)
    mag = np.abs(A - C) ** (1 - alpha) * np.abs(B - C) ** alpha
    return C + np.copysign(mag, (1 - beta) * A + beta * B - C)


@pytest.mark.parametrize("shape", ALL_SHAPES)
@pytest.mark.parametrize("alpha, beta", [(0.5, 0.5), (0.0, 0.0), (1.0, 1.0), (0.2, 0.9)])
def test_multiply_difference(shape, alpha, beta):
    a, b, c = rands(3, shape, seed=14)
    assert_matches(M.multiply_difference(a, b, c, alpha=alpha, beta=beta), _multiply_ref(a, b, c, alpha, beta),
                   like=a)


def test_multiply_difference_alpha_endpoints():
    a, b, c = rands(3, (5, 5), seed=15)
    torch.testing.assert_close(M.multiply_difference(a, b, c, alpha=0.0, beta=0.0), a)
    torch.testing.assert_close(M.multiply_difference(a, b, c, alpha=1.0, beta=1.0), b)


def _similarity_ref(a, b, c, alpha, beta):
    A, B, C = npy(a), npy(b), npy(c)
    out = np.empty_like(A)
    for i in np.ndindex(A.shape):
        thr = max(abs(A[i]), abs(B[i]))
        s = beta * (A[i] * B[i] / thr ** 2 + 1) / 2 if thr else beta
        added = A[i] + alpha * (B[i] - C[i])
        averaged = (1 - alpha / 2) * A[i] + alpha / 2 * B[i]
        out[i] = (1 - s) * added + s * averaged
    return out


@pytest.mark.parametrize("shape", ALL_SHAPES)
@pytest.mark.parametrize("alpha, beta", [(1.0, 1.0), (0.5, 0.0), (0.0, 0.5), (2.0, 0.3)])
def test_similarity_add_difference(shape, alpha, beta):
    a, b, c = rands(3, shape, seed=16)
    assert_matches(M.similarity_add_difference(a, b, c, alpha=alpha, beta=beta),
                   _similarity_ref(a, b, c, alpha, beta), like=a)


def test_similarity_add_difference_zeros():
    z = torch.zeros(3)
    c = torch.tensor([1.0, -2.0, 3.0])
    assert_matches(M.similarity_add_difference(z, z, c, alpha=1.0, beta=0.5),
                   _similarity_ref(z, z, c, 1.0, 0.5), like=z)


def _extract_ref(a, b, c, alpha, beta, gamma):
    A, B, C = npy(a), npy(b), npy(c)
    shape = A.shape
    if A.ndim == 0:
        A, B, C = A.reshape(1), B.reshape(1), C.reshape(1)
    DB, DC = B - A, C - A
    out = np.empty_like(A)
    for idx in np.ndindex(A.shape[:-1]):
        x, y = DB[idx], DC[idx]
        cos = float(x @ y) / (max(np.linalg.norm(x), 1e-8) * max(np.linalg.norm(y), 1e-8))
        d = ((min(max(cos, -1), 1) + 1) / 2) ** gamma
        out[idx] = A[idx] + ((1 - alpha) * x + alpha * y) * ((1 - beta) * d + beta * (1 - d))
    return out.reshape(shape)


@pytest.mark.parametrize("shape", ALL_SHAPES)
@pytest.mark.parametrize("alpha, beta, gamma", [(0.5, 0.0, 1.0), (0.0, 1.0, 2.0), (1.0, 0.5, 0.0), (0.3, 0.2, 4.0)])
def test_extract(shape, alpha, beta, gamma):
    a, b, c = rands(3, shape, seed=17)
    assert_matches(M.extract(a, b, c, alpha=alpha, beta=beta, gamma=gamma),
                   _extract_ref(a, b, c, alpha, beta, gamma), like=a)


def test_extract_identical_differences():
    a, b = rands(2, (4, 6), seed=18)
    # b = c: cosine 1, d = 1: the whole difference for beta = 0, nothing for beta = 1
    torch.testing.assert_close(M.extract(a, b, b, beta=0.0), b)
    torch.testing.assert_close(M.extract(a, b, b, beta=1.0), a)
    assert torch.equal(M.extract(a, a, a), a)


# ------------------------------------------------------------------------------------------------
# Cosine and geometric sums


def _cosine_ref(a, b, alpha, with_whole):
    A, B = npy(a), npy(b)
    shape = A.shape
    if A.ndim == 0:
        A, B = A.reshape(1), B.reshape(1)
    cols = np.empty(A.shape[1:])
    for idx in np.ndindex(A.shape[1:]):
        x, y = A[(slice(None),) + idx], B[(slice(None),) + idx]
        cols[idx] = float(x @ y) / (max(np.linalg.norm(x), 1e-8) * max(np.linalg.norm(y), 1e-8))
    sim = cols
    if with_whole:
        norms = np.linalg.norm(A) * np.linalg.norm(B)
        sim = (cols + (float(np.sum(A * B)) / norms if norms else 0.0)) / 2
    k = 1 - np.clip(sim - alpha, 0, 1)
    return ((1 - k) * A + k * B).reshape(shape)


@pytest.mark.parametrize("shape", ALL_SHAPES)
@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0])
def test_cosine_a_b(shape, alpha):
    a, b = rands(2, shape, seed=19)
    b = a + 0.5 * b  # correlated, so similarities spread over [0, 1]
    assert_matches(M.cosine_a(a, b, alpha=alpha), _cosine_ref(a, b, alpha, False), like=a)
    assert_matches(M.cosine_b(a, b, alpha=alpha), _cosine_ref(a, b, alpha, True), like=a)


def test_cosine_identical_and_zero():
    a = rand((5, 3), 20)
    torch.testing.assert_close(M.cosine_a(a, a), a)
    torch.testing.assert_close(M.cosine_b(a, a), a)
    z = torch.zeros(5, 3)
    assert torch.isfinite(M.cosine_b(a, z)).all() and torch.isfinite(M.cosine_a(z, a)).all()


@pytest.mark.parametrize("shape", ALL_SHAPES)
@pytest.mark.parametrize("alpha", [0.0, 0.3, 0.5, 1.0])
def test_geometric_sum(shape, alpha):
    a, b = rands(2, shape, seed=21)
    ref = np.real(npy(a).astype(complex) ** (1 - alpha) * npy(b).astype(complex) ** alpha)
    assert_matches(M.geometric_sum(a, b, alpha=alpha), ref, like=a)


def test_geometric_sum_properties():
    a = rand((4, 4), 22)
    torch.testing.assert_close(M.geometric_sum(a, a, alpha=0.3), a)
    torch.testing.assert_close(M.geometric_sum(torch.tensor([4.0, 9.0]), torch.tensor([1.0, 4.0])),
                               torch.tensor([2.0, 6.0]))
    z = torch.zeros(2)
    x = torch.tensor([3.0, -2.0])
    assert torch.equal(M.geometric_sum(z, x, alpha=0.5), z)
    assert torch.equal(M.geometric_sum(z, x, alpha=1.0), x)  # 0⁰ = 1


# ------------------------------------------------------------------------------------------------
# Slicing


def _region_ref(width, offset, n):
    """Which of n rows come from b: a loop over rows, with the slice wrapping past the end."""
    offset = offset % 1.0
    if width + offset <= 1:
        start, end = round(offset * n), round((width + offset) * n)
        return [start <= i < end for i in range(n)]
    start, end = round((width + offset - 1) * n), round(offset * n)
    return [not (start <= i < end) for i in range(n)]


@pytest.mark.parametrize("shape", ALL_SHAPES + [(10, 2)])
@pytest.mark.parametrize("alpha, beta", [(0.5, 0.0), (0.0, 0.3), (1.0, 0.0), (0.3, 0.4), (0.6, 0.7),
                                         (1.0, 0.5), (0.5, 1.0)])
def test_tensor_sum(shape, alpha, beta):
    a, b = rands(2, shape, seed=23)
    A, B = npy(a), npy(b)
    if A.ndim == 0:
        ref = B if alpha > 0.5 else A
    else:
        ref = A.copy()
        for i, from_b in enumerate(_region_ref(alpha, beta, A.shape[0])):
            if from_b:
                ref[i] = B[i]
    out = M.tensor_sum(a, b, alpha=alpha, beta=beta)
    assert_matches(out, ref, like=a, atol=0, rtol=0)


def test_tensor_sum_does_not_modify_inputs():
    a, b = rands(2, (8, 3), seed=24)
    a0, b0 = a.clone(), b.clone()
    M.tensor_sum(a, b, alpha=0.5, beta=0.25)
    M.tensor_sum(a, b, alpha=0.5, beta=0.75)
    assert torch.equal(a, a0) and torch.equal(b, b0)


def _top_k_ref(a, b, alpha, beta):
    A, B = npy(a).ravel(), npy(b).ravel()
    n = A.size
    a_sorted = sorted(A)
    b_order = sorted(range(n), key=lambda i: (B[i], i))
    redistributed = np.empty(n)
    for rank, pos in enumerate(b_order):
        redistributed[pos] = a_sorted[rank]
    offset = beta % 1.0
    if alpha + offset <= 1:
        k0, k1, inverted = round(offset * n), round((alpha + offset) * n), False
    else:
        k0, k1, inverted = round((alpha + offset - 1) * n), round(offset * n), True
    mags = sorted(abs(x) for x in A)
    lo = mags[k0 - 1] if k0 > 0 else -1.0
    hi = mags[k1 - 1] if k1 > 0 else -1.0
    out = A.copy()
    for i in range(n):
        in_band = lo <= abs(redistributed[i]) <= hi
        if in_band != inverted:
            out[i] = redistributed[i]
    return out


@pytest.mark.parametrize("shape", ALL_SHAPES)
@pytest.mark.parametrize("alpha, beta", [(1.0, 0.0), (0.5, 0.0), (0.5, 0.5), (0.3, 0.9), (0.0, 0.2)])
def test_top_k_tensor_sum(shape, alpha, beta):
    a, b = rands(2, shape, seed=25)
    assert_matches(M.top_k_tensor_sum(a, b, alpha=alpha, beta=beta), _top_k_ref(a, b, alpha, beta), like=a,
                   atol=0, rtol=0)


def test_top_k_tensor_sum_full_redistribution():
    a = torch.tensor([3.0, 1.0, 2.0, -5.0])
    b = torch.tensor([0.1, 0.4, 0.3, 0.2])  # ranks 0, 3, 2, 1
    assert torch.equal(M.top_k_tensor_sum(a, b), torch.tensor([-5.0, 3.0, 2.0, 1.0]))
    assert torch.equal(M.top_k_tensor_sum(a, a), a)


# ------------------------------------------------------------------------------------------------
# Crossovers


def _filter_ref(m, alpha, tilt):
    tilt = tilt % 4
    inverted = tilt > 2
    if inverted:
        alpha = 1 - alpha
    if tilt < 1e-10 or abs(tilt - 4) < 1e-10:
        f = 1.0 if m > 1 - alpha else 0.0
    elif abs(tilt - 2) < 1e-10:
        f = 1.0 if m < 1 - alpha else 0.0
    else:
        cot = 1 / math.tan(math.pi * tilt / 2)
        if tilt <= 1 or 2 < tilt <= 3:
            f = m * cot + alpha * cot + alpha - cot
        else:
            f = m * cot - alpha * cot + alpha
        f = min(max(f, 0.0), 1.0)
    return 1 - f if inverted else f


def _crossover_ref(a, b, alpha, tilt):
    A, B = npy(a), npy(b)
    shape = A.shape
    if A.ndim == 0:
        A, B = A.reshape(1), B.reshape(1)
    FA, FB = np.fft.rfftn(A), np.fft.rfftn(B)
    F = np.empty(FA.shape)
    for idx in np.ndindex(FA.shape):
        parts = []
        for axis, k in enumerate(idx):
            n = A.shape[axis]
            freq = k if axis == A.ndim - 1 or k <= (n - 1) // 2 else n - k  # |signed frequency|
            parts.append(freq / (n // 2) if n // 2 else 0.0)
        m = math.sqrt(sum(p * p for p in parts) / len(parts))
        F[idx] = _filter_ref(m, alpha, tilt)
    return np.fft.irfftn((1 - F) * FA + F * FB, s=A.shape, axes=list(range(A.ndim))).reshape(shape)


@pytest.mark.parametrize("shape", SHAPES + [(8,), (6, 8), (1, 5)])
@pytest.mark.parametrize("alpha, tilt", [(0.5, 0.0), (0.3, 0.5), (0.7, 0.25), (0.4, 1.5), (0.6, 2.0),
                                         (0.5, 2.5), (0.2, 3.5), (0.8, 4.0)])
def test_crossover(shape, alpha, tilt):
    a, b = rands(2, shape, seed=26)
    assert_matches(M.crossover(a, b, alpha=alpha, tilt=tilt), _crossover_ref(a, b, alpha, tilt), like=a)


@pytest.mark.parametrize("shape", [(7,), (4, 3, 3, 3)] + EMPTY_SHAPES)
def test_crossover_shortcuts(shape):
    a, b = rands(2, shape, seed=27)
    assert torch.equal(M.crossover(a, b, alpha=0.0, tilt=0.3), a)
    assert torch.equal(M.crossover(a, b, alpha=1.0, tilt=0.3), b)
    torch.testing.assert_close(M.crossover(a, b, alpha=0.3, tilt=1.0), torch.lerp(a, b, 0.3))
    torch.testing.assert_close(M.crossover(a, a, alpha=0.3, tilt=0.5), a)


def _distribution_crossover_ref(a, b, c, alpha, tilt):
    A, B, C = npy(a).ravel(), npy(b).ravel(), npy(c).ravel()
    order = np.argsort(C, kind="stable")
    FA, FB = np.fft.rfft(A[order]), np.fft.rfft(B[order])
    K = FA.shape[0]
    F = np.array([_filter_ref(k / (K - 1) if K > 1 else 0.0, alpha, tilt) for k in range(K)])
    mixed = np.fft.irfft((1 - F) * FA + F * FB, n=A.size)
    out = np.empty_like(mixed)
    out[order] = mixed
    return out


@pytest.mark.parametrize("shape", SHAPES + [(8,)])
@pytest.mark.parametrize("alpha, tilt", [(0.5, 0.0), (0.3, 0.5), (0.6, 2.0), (0.5, 3.3)])
def test_distribution_crossover(shape, alpha, tilt):
    a, b, c = rands(3, shape, seed=28)
    assert_matches(M.distribution_crossover(a, b, c, alpha=alpha, tilt=tilt),
                   _distribution_crossover_ref(a, b, c, alpha, tilt), like=a)


@pytest.mark.parametrize("shape", [(7,), (4, 3, 3, 3)] + EMPTY_SHAPES)
def test_distribution_crossover_shortcuts(shape):
    a, b, c = rands(3, shape, seed=29)
    assert torch.equal(M.distribution_crossover(a, b, c, alpha=0.0), a)
    assert torch.equal(M.distribution_crossover(a, b, c, alpha=1.0), b)
    torch.testing.assert_close(M.distribution_crossover(a, b, c, alpha=0.4, tilt=1.0), torch.lerp(a, b, 0.4))
    torch.testing.assert_close(M.distribution_crossover(a, a, c, alpha=0.4, tilt=0.5), a)


# ------------------------------------------------------------------------------------------------
# Half precision: computed in float32, returned in the first input's dtype


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_inputs(dtype):
    a, b, c = rands(3, (4, 3, 3, 3), seed=30, dtype=dtype)
    assert_matches(M.train_difference(a, b, c), _train_difference_ref(a, b, c, 1.0), like=a)
    assert_matches(M.smooth_add_difference(a, b, c, alpha=0.5),
                   npy(a) + 0.5 * _gauss_ref(_median3_ref(npy(b) - npy(c))), like=a)
    assert_matches(M.add_perpendicular(a, b, c), npy(a).ravel() + _perp_ref(a.double() - c.double(),
                                                                            b.double() - c.double()), like=a)
    assert_matches(M.perpendicular_component(a, b), _perp_ref(a, b), like=a)
    assert_matches(M.euclidean_add_difference(a, b, c), _euclidean_ref(a, b, c, 0.5), like=a)
    assert_matches(M.multiply_difference(a, b, c), _multiply_ref(a, b, c, 0.5, 0.5), like=a)
    assert_matches(M.similarity_add_difference(a, b, c), _similarity_ref(a, b, c, 1.0, 1.0), like=a)
    assert_matches(M.extract(a, b, c), _extract_ref(a, b, c, 0.5, 0.0, 1.0), like=a)
    assert_matches(M.cosine_a(a, b), _cosine_ref(a, b, 0.5, False), like=a)
    assert_matches(M.cosine_b(a, b), _cosine_ref(a, b, 0.5, True), like=a)
    assert_matches(M.geometric_sum(a, b), np.real(npy(a).astype(complex) ** 0.5 * npy(b).astype(complex) ** 0.5),
                   like=a)
    assert_matches(M.tensor_sum(a, b), np.concatenate([npy(b)[:2], npy(a)[2:]]), like=a)
    assert_matches(M.top_k_tensor_sum(a, b), _top_k_ref(a, b, 1.0, 0.0), like=a)
    assert_matches(M.crossover(a, b, alpha=0.3, tilt=0.5), _crossover_ref(a, b, 0.3, 0.5), like=a)
    assert_matches(M.distribution_crossover(a, b, c), _distribution_crossover_ref(a, b, c, 0.5, 0.0), like=a)
