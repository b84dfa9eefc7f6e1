"""Spherical merge methods against straightforward numpy implementations of their formulas."""

import math

import numpy as np
import pytest
import torch

from mechalang.methods import spherical as S

from ._blend_helpers import EMPTY_SHAPES, SHAPES, assert_matches, npy, rand, rands, signature

ALL_SHAPES = SHAPES + EMPTY_SHAPES


# ------------------------------------------------------------------------------------------------
# Registered signatures


@pytest.mark.parametrize("name, expected", [
    ("slerp", "slerp(a: same, b: same, alpha: float in [0, 1] = 0.5, epsilon: float in (0, inf] = 1e-08, "
              "dot_threshold: float in [0, 1] = 0.9995) -> same"),
    ("nuslerp", "nuslerp(a: same, b: same, weight_a: float = 1.0, weight_b: float = 1.0, "
                "flatten: bool = true, row_wise: bool = false, epsilon: float in (0, inf] = 1e-08) -> same"),
    ("multislerp", "multislerp(*models: same, weights: comma-separated numbers, one per model "
                   "(empty: equal weights) = \"\", normalize_weights: bool = true, "
                   "epsilon: float in (0, inf] = 1e-08) -> same"),
    ("karcher_mean", "karcher_mean(*models: same, max_iter: int in [1, inf] = 10, "
                     "tol: float in (0, inf] = 1e-05) -> same"),
])
def test_signature(name, expected):
    spec = signature(name)
    assert spec.signature() == expected
    assert spec.family == "spherical" and spec.formula and spec.doc


def test_model_counts():
    assert signature("slerp").min_models == signature("slerp").max_models == 2
    assert signature("multislerp").min_models == 1 and signature("multislerp").max_models is None
    assert signature("karcher_mean").min_models == 1


def test_weights_kind_is_checked_statically():
    kind = signature("multislerp").hyper("weights").kind
    assert kind.type == "str"
    assert kind.check("") is None and kind.check("1, 2,0.5") is None and kind.check("-1,3e-1") is None
    assert "not a number" in kind.check("1, x")
    assert kind.check("1, inf") is not None
    assert kind.check(3.0) is not None


# ------------------------------------------------------------------------------------------------
# slerp


def _slerp_ref(t, a, b, eps=1e-8, threshold=0.9995):
    v0, v1 = npy(a).ravel(), npy(b).ravel()
    n0, n1 = np.linalg.norm(v0), np.linalg.norm(v1)
    u0 = v0 / n0 if n0 > eps else v0
    u1 = v1 / n1 if n1 > eps else v1
    dot = float(np.sum(u0 * u1))
    if abs(dot) > threshold:
        return (1 - t) * v0 + t * v1
    omega = np.arccos(dot)
    return (np.sin((1 - t) * omega) * v0 + np.sin(t * omega) * v1) / np.sin(omega)


@pytest.mark.parametrize("shape", ALL_SHAPES)
@pytest.mark.parametrize("alpha", [0.0, 0.25, 0.5, 1.0])
def test_slerp(shape, alpha):
    a, b = rands(2, shape, seed=1)
    out = S.slerp(a, b, alpha=alpha)
    assert_matches(out, _slerp_ref(alpha, a, b), like=a, atol=1e-5, rtol=1e-4)


def test_slerp_endpoints_and_norm():
    a = torch.tensor([3.0, 0.0, 0.0])
    b = torch.tensor([0.0, 3.0, 0.0])
    torch.testing.assert_close(S.slerp(a, b, alpha=0.0), a)
    torch.testing.assert_close(S.slerp(a, b, alpha=1.0), b)
    mid = S.slerp(a, b, alpha=0.5)
    torch.testing.assert_close(mid, torch.tensor([3 / math.sqrt(2), 3 / math.sqrt(2), 0.0]))
    assert math.isclose(float(mid.norm()), 3.0, rel_tol=1e-6)  # a weighted sum would give 2.12


def test_slerp_parallel_and_antiparallel_fall_back_to_lerp():
    a = rand((5, 5), 2)
    for b in (2.5 * a, -a, a):
        torch.testing.assert_close(S.slerp(a, b, alpha=0.3), torch.lerp(a, b, 0.3))


def test_slerp_zero_tensor():
    a = torch.zeros(6)
    b = rand((6,), 3)
    out = S.slerp(a, b, alpha=0.5)
    assert torch.isfinite(out).all()
    assert_matches(out, _slerp_ref(0.5, a, b), like=a)


# ------------------------------------------------------------------------------------------------
# nuslerp


def _nuslerp_rows_ref(t, v0, v1, eps=1e-8):
    """v0, v1: 2-D numpy arrays; slerp row i of v0 to row i of v1."""
    out = np.empty_like(v0)
    for i in range(v0.shape[0]):
        x, y = v0[i], v1[i]
        ux = x / max(np.linalg.norm(x), 1e-7)
        uy = y / max(np.linalg.norm(y), 1e-7)
        theta = np.arccos(np.clip(np.sum(ux * uy), -1, 1))
        if abs(np.sin(theta)) < eps:
            out[i] = (1 - t) * x + t * y
        else:
            out[i] = (np.sin((1 - t) * theta) * x + np.sin(t * theta) * y) / np.sin(theta)
    return out


def _nuslerp_ref(a, b, wa, wb, flatten, row_wise):
    t = 0.5 if abs(wa + wb) < 1e-6 else wb / (wa + wb)
    A, B = npy(a), npy(b)
    if A.size == 0:
        return A
    if flatten or A.ndim <= 1:
        return _nuslerp_rows_ref(t, A.reshape(1, -1), B.reshape(1, -1))
    if row_wise:
        At, Bt = np.swapaxes(A, 0, -1), np.swapaxes(B, 0, -1)
        res = _nuslerp_rows_ref(t, At.reshape(-1, At.shape[-1]), Bt.reshape(-1, Bt.shape[-1]))
        return np.swapaxes(res.reshape(At.shape), 0, -1)
    return _nuslerp_rows_ref(t, A.reshape(-1, A.shape[-1]), B.reshape(-1, B.shape[-1]))


@pytest.mark.parametrize("shape", SHAPES + [(0,), (3, 0)])
@pytest.mark.parametrize("flatten, row_wise", [(True, False), (False, False), (False, True)])
@pytest.mark.parametrize("wa, wb", [(1.0, 1.0), (1.0, 3.0), (2.0, 0.0), (1.0, -1.0)])
def test_nuslerp(shape, flatten, row_wise, wa, wb):
    a, b = rands(2, shape, seed=4)
    out = S.nuslerp(a, b, weight_a=wa, weight_b=wb, flatten=flatten, row_wise=row_wise)
    assert_matches(out, _nuslerp_ref(a, b, wa, wb, flatten, row_wise), like=a, atol=1e-5, rtol=1e-4)


def test_nuslerp_colinear_rows_are_lerped():
    a = rand((4, 6), 5)
    b = a * torch.tensor([[2.0], [1.0], [0.5], [3.0]])
    out = S.nuslerp(a, b, weight_a=1.0, weight_b=1.0, flatten=False)
    torch.testing.assert_close(out, torch.lerp(a, b, 0.5), atol=1e-3, rtol=1e-3)
    assert torch.isfinite(out).all()


# ------------------------------------------------------------------------------------------------
# multislerp


def _multislerp_ref(models, weights, normalize=True, eps=1e-8):
    X = np.stack([npy(m).ravel() for m in models])
    w = np.asarray(weights, dtype=np.float64)
    if normalize:
        w = w / w.sum()
    norms = np.linalg.norm(X, axis=1)
    U = X / (norms[:, None] + eps)
    mu = (w[:, None] * U).sum(0)
    if np.linalg.norm(mu) < eps:
        return (w[:, None] * X).sum(0)
    mu = mu / np.linalg.norm(mu)
    T = np.stack([u - np.dot(u, mu) * mu for u in U])
    tr = (w[:, None] * T).sum(0)
    tn = np.linalg.norm(tr) + eps
    res = mu * np.cos(tn) + tr * np.sin(tn) / tn
    return res * float((norms * w).sum())


@pytest.mark.parametrize("shape", SHAPES + [(0,)])
@pytest.mark.parametrize("weights", ["", "1,2,3", "0.2, 0.2, 0.6"])
def test_multislerp(shape, weights):
    models = rands(3, shape, seed=6)
    out = S.multislerp(*models, weights=weights)
    w = [float(x) for x in weights.split(",")] if weights else [1.0, 1.0, 1.0]
    assert_matches(out, _multislerp_ref(models, w), like=models[0], atol=1e-5, rtol=1e-4)


def test_multislerp_unnormalized_weights():
    models = rands(4, (5, 5), seed=7)
    out = S.multislerp(*models, weights="0.5,0.1,0.2,0.1", normalize_weights=False)
    assert_matches(out, _multislerp_ref(models, [0.5, 0.1, 0.2, 0.1], normalize=False), like=models[0],
                   atol=1e-5, rtol=1e-4)


def test_multislerp_two_equal_weights_is_slerp_midpoint_of_equal_norms():
    a = torch.tensor([2.0, 0.0, 0.0])
    b = torch.tensor([0.0, 2.0, 0.0])
    torch.testing.assert_close(S.multislerp(a, b), S.slerp(a, b, alpha=0.5))


def test_multislerp_single_identical_and_antipodal():
    a = rand((4, 4), 8)
    assert torch.equal(S.multislerp(a), a)
    torch.testing.assert_close(S.multislerp(a, a, a), a, atol=1e-5, rtol=1e-5)
    # antipodal with balanced weights: falls back to the weighted sum (zero here)
    torch.testing.assert_close(S.multislerp(a, -a), torch.zeros_like(a))


def test_multislerp_weight_count_mismatch_is_an_error():
    a, b = rands(2, (3,), seed=9)
    with pytest.raises(ValueError, match="3 weights given for 2 models"):
        S.multislerp(a, b, weights="1,2,3")


# ------------------------------------------------------------------------------------------------
# karcher_mean


def _karcher_ref(models, max_iter=10, tol=1e-5):
    X = [npy(m).ravel() for m in models]
    n = len(X)
    norms = [float(np.linalg.norm(x)) for x in X]
    units = [x / nm for x, nm in zip(X, norms) if nm > tol]
    if not units:
        return np.zeros_like(X[0])
    k = len(units)
    mean = sum(units) / k
    mn = np.linalg.norm(mean)
    mean = units[0].copy() if mn < tol else mean / mn
    for _ in range(max_iter):
        tangent = np.zeros_like(mean)
        for u in units:
            dot = np.clip(np.dot(mean, u), -1, 1)
            theta = np.arccos(dot)
            if theta < tol:
                continue
            tangent += (1 / k) * theta / np.sin(theta) * (u - dot * mean)
        tn = np.linalg.norm(tangent)
        if tn < tol:
            break
        mean = np.cos(tn) * mean + np.sin(tn) * tangent / tn
        un = np.linalg.norm(mean)
        if un > tol:
            mean = mean / un
    return sum(norms) / n * mean


@pytest.mark.parametrize("shape", SHAPES + [(0,)])
@pytest.mark.parametrize("n", [2, 3, 5])
def test_karcher_mean(shape, n):
    models = rands(n, shape, seed=10 + n)
    out = S.karcher_mean(*models)
    assert_matches(out, _karcher_ref(models), like=models[0], atol=1e-4, rtol=1e-4)


def test_karcher_mean_converges_to_geodesic_midpoint():
    a = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
    b = torch.tensor([0.0, 3.0, 0.0], dtype=torch.float64)
    out = S.karcher_mean(a, b, max_iter=100, tol=1e-12)
    torch.testing.assert_close(out, torch.tensor([2 / math.sqrt(2), 2 / math.sqrt(2), 0.0], dtype=torch.float64))


def test_karcher_mean_edge_cases():
    a = rand((3, 3), 11)
    assert torch.equal(S.karcher_mean(a), a)
    torch.testing.assert_close(S.karcher_mean(a, a, a), a, atol=1e-5, rtol=1e-5)
    z = torch.zeros(3, 3)
    assert torch.equal(S.karcher_mean(z, z), z)
    # a zero tensor takes no part in the direction but counts in the mean norm
    torch.testing.assert_close(S.karcher_mean(a, z), a / 2)


# ------------------------------------------------------------------------------------------------
# Half precision


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_inputs(dtype):
    a, b, c = rands(3, (4, 3, 3, 3), seed=12, dtype=dtype)
    assert_matches(S.slerp(a, b, alpha=0.3), _slerp_ref(0.3, a, b), like=a)
    assert_matches(S.nuslerp(a, b, flatten=False), _nuslerp_ref(a, b, 1.0, 1.0, False, False), like=a)
    assert_matches(S.multislerp(a, b, c), _multislerp_ref([a, b, c], [1, 1, 1]), like=a)
    assert_matches(S.karcher_mean(a, b, c), _karcher_ref([a, b, c]), like=a)
