"""Spherical methods on a tensor as large as an LLM's embedding (≥ 30M elements) agree with a
float64 computation of their formula to within one bfloat16 unit in the last place: the norms and
dot products over the whole tensor are summed in blocks, and the block sums in float64
(methods/_reduce.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mechalang.methods._reduce import dot64, norm64, rows_dot64, rows_norm64
from mechalang.methods.spherical import karcher_mean, multislerp, nuslerp, slerp

N = 30_000_000 + 17  # like a 33M-element embedding; not a multiple of the chunk size


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The engine runs torch single-threaded inside each key task; single-threaded float32
    reductions are the inaccurate ones (a norm over 30M elements is off by ~1.6e-3)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def models():
    """Three bf16 "fine-tunes" of one base: small angles between them, where accuracy matters."""
    g = torch.Generator().manual_seed(7)
    base = torch.randn(N, generator=g)
    out = [(base + 0.05 * torch.randn(N, generator=g)).to(torch.bfloat16) for _ in range(3)]
    return out


def ulps(got: torch.Tensor, want: np.ndarray) -> float:
    """The largest difference between `got` (bf16) and the float64 `want`, in bfloat16 units in
    the last place: of each element, or of the tensor's scale (its root mean square) for elements
    smaller than it, since a fixed absolute error is many ulps of an element near zero."""
    def ulp(x):
        return 2.0 ** (np.floor(np.log2(np.maximum(x, 1e-30))) - 7)  # bf16 has 8 significant bits

    err = np.abs(got.to(torch.float64).numpy() - want)
    rms = float(np.sqrt(np.mean(want * want)))
    return float((err / np.maximum(ulp(np.abs(want)), ulp(rms))).max())


def f64(t: torch.Tensor) -> np.ndarray:
    return t.to(torch.float64).numpy()


def test_karcher_mean_matches_float64(models):
    got = karcher_mean(*models, max_iter=10, tol=1e-5)
    xs = [f64(m) for m in models]
    norms = np.array([np.linalg.norm(x) for x in xs])
    units = [x / n for x, n in zip(xs, norms)]
    mean = sum(units) / len(units)
    mean /= np.linalg.norm(mean)
    for _ in range(10):
        tangent = np.zeros_like(mean)
        for u in units:
            c = float(np.clip(u @ mean, -1, 1))
            th = np.arccos(c)
            if th >= 1e-5:
                tangent += th / np.sin(th) * (u - c * mean) / len(units)
        step = np.linalg.norm(tangent)
        if step < 1e-5:
            break
        mean = np.cos(step) * mean + np.sin(step) * tangent / step
        mean /= np.linalg.norm(mean)
    want = mean * norms.mean()
    assert ulps(got, want) <= 1


def test_slerp_matches_float64(models):
    a, b = models[0], models[1]
    got = slerp(a, b, alpha=0.3)
    x, y = f64(a), f64(b)
    c = float(np.clip(x @ y / (np.linalg.norm(x) * np.linalg.norm(y)), -1, 1))
    om = np.arccos(c)
    want = np.sin(0.7 * om) / np.sin(om) * x + np.sin(0.3 * om) / np.sin(om) * y
    assert ulps(got, want) <= 1


def test_nuslerp_flattened_matches_float64(models):
    a, b = models[0], models[2]
    got = nuslerp(a, b, weight_a=1.0, weight_b=3.0)
    x, y = f64(a), f64(b)
    c = float(np.clip(x @ y / (np.linalg.norm(x) * np.linalg.norm(y)), -1, 1))
    th = np.arccos(c)
    want = (np.sin(0.25 * th) * x + np.sin(0.75 * th) * y) / np.sin(th)
    assert ulps(got, want) <= 1


def test_multislerp_matches_float64(models):
    got = multislerp(*models, weights="1, 2, 1")
    xs = [f64(m) for m in models]
    w = np.array([1.0, 2.0, 1.0]) / 4
    norms = np.array([np.linalg.norm(x) for x in xs])
    units = [x / (n + 1e-8) for x, n in zip(xs, norms)]
    mean = sum(wi * u for wi, u in zip(w, units))
    mean /= np.linalg.norm(mean)
    tangent = sum(wi * (u - (u @ mean) * mean) for wi, u in zip(w, units))
    tn = np.linalg.norm(tangent) + 1e-8
    want = (mean * np.cos(tn) + tangent * np.sin(tn) / tn) * float(norms @ w)
    assert ulps(got, want) <= 1


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
def test_the_reductions_are_float64_accurate(dtype):
    """Within 1e-7 of the norms' product, far below a bfloat16 step (4e-3): ~1e-10 for float32
    inputs, ~1e-8 for bfloat16 ones (a float32 summation over all elements is off by ~1e-4 here)."""
    g = torch.Generator().manual_seed(3)
    x = (torch.randn(3 * (1 << 20) + 5, generator=g) + 0.3).to(dtype)  # not a multiple of the block
    y = (torch.randn(x.numel(), generator=g) + 0.1).to(dtype)
    nx, ny = np.linalg.norm(f64(x)), np.linalg.norm(f64(y))
    assert abs(float(dot64(x, y)) - float(f64(x) @ f64(y))) <= 1e-7 * nx * ny
    assert float(norm64(x)) == pytest.approx(nx, rel=1e-7)
    rows = torch.stack([x, y])
    np.testing.assert_allclose(rows_norm64(rows).numpy(), [nx, ny], rtol=1e-7)
    np.testing.assert_allclose(rows_dot64(rows, x).numpy(), [f64(x) @ f64(x), f64(y) @ f64(x)], rtol=1e-7)
    assert float(dot64(x[:20], y[:20])) == pytest.approx(float(f64(x[:20]) @ f64(y[:20])), rel=1e-12)  # < 1 block: float64
    assert float(norm64(x[:0])) == 0.0
