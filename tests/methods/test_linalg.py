"""`rotate` and `truncate_rank` against numpy/scipy implementations of their formulas."""

import time

import numpy as np
import pytest
import scipy.linalg
import torch

from mechalang.methods import REGISTRY
from mechalang.methods import linalg as L
from mechalang.methods.registry import Delta, Same


def rand(shape, seed, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g, dtype=torch.float64).to(dtype)


def npy(t):
    return t.detach().to(torch.float64).numpy()


def check(result, expected, like, atol=1e-4, rtol=1e-4):
    assert result.shape == like.shape and result.dtype == like.dtype, (result.shape, result.dtype)
    np.testing.assert_allclose(npy(result), np.asarray(expected).reshape(like.shape), atol=atol, rtol=rtol)


# ------------------------------------------------------------------------------------------------
# Signatures


def test_signatures():
    rot = REGISTRY.get("rotate")
    assert rot.signature() == "rotate(a: same, b: same, alpha: float = 1.0, beta: float = 0.0) -> same"
    assert rot.models[0].space == Same and rot.returns == Same and rot.family == "linalg"
    tr = REGISTRY.get("truncate_rank")
    assert tr.signature() == ("truncate_rank(delta: delta, rank: int in [0, inf] = 0, "
                              "rank_ratio: float in [0, 1] = 0.5) -> delta")
    assert tr.models[0].space == Delta and tr.returns == Delta
    assert tr.hyper("rank_ratio").kind.check(1.5) is not None and tr.hyper("rank").kind.check(-1) is not None
    assert rot.formula and rot.doc and tr.formula and tr.doc


# ------------------------------------------------------------------------------------------------
# rotate: reference


def ref_matrix_shape(shape):
    if len(shape) == 4 and shape[2] * shape[3] > 1:
        return shape[0] * shape[1], shape[2] * shape[3]
    return shape[0], int(np.prod(shape[1:]))


def ref_rotation(A, B, proper):
    """The orthogonal R minimizing ‖A R − B‖ closest to the identity, in the full feature space,
    straight from the definitions (numpy SVDs, no subspace reduction)."""
    U, S, Vh = np.linalg.svd(A.T @ B)
    d = S.size
    r = int(np.sum(S > S[0] * d * 1e-12)) if S[0] > 0 else 0
    if r == d:
        if proper and np.linalg.det(U @ Vh) < 0:
            U[:, -1] *= -1
        return U @ Vh
    U0, V0 = U[:, r:], Vh[r:].T
    P, _, Qh = np.linalg.svd(U0.T @ V0)
    R = U[:, :r] @ Vh[:r] + U0 @ P @ Qh @ V0.T
    if proper and np.linalg.det(R) < 0:
        P[:, -1] *= -1
        R = U[:, :r] @ Vh[:r] + U0 @ P @ Qh @ V0.T
    return R


def ref_rotate(a, b, alpha, beta):
    a, b = npy(a), npy(b)
    shape = a.shape
    if alpha == 0 and beta == 0:
        return a
    if a.ndim <= 1:
        return (1 - beta) * a + beta * b
    m, d = ref_matrix_shape(shape)
    A, B = a.reshape(m, d), b.reshape(m, d)
    ca, cb = A.mean(0), B.mean(0)
    A, B = A - ca, B - cb
    fractional = alpha != round(alpha)
    R = ref_rotation(A, B, fractional)
    T = np.real(scipy.linalg.fractional_matrix_power(R, alpha)) if fractional else \
        np.linalg.matrix_power(R, int(round(alpha)))
    X = (1 - beta) * A + beta * (B @ R.T)
    return (X @ T + (1 - alpha) * ca + alpha * cb).reshape(shape)


ROT_SHAPES = [(40, 6), (12, 12), (7, 30), (5, 8), (4, 3, 3, 3), (6, 4, 1, 1), (3, 4, 5)]


@pytest.mark.parametrize("shape", ROT_SHAPES)
@pytest.mark.parametrize("alpha, beta", [(1.0, 0.0), (0.5, 0.0), (0.3, 0.4), (1.0, 1.0), (2.0, 0.0),
                                         (-0.5, 0.2), (0.0, 0.5)])
def test_rotate_matches_reference(shape, alpha, beta):
    a = rand(shape, 1, torch.float64)
    b = a + 0.7 * rand(shape, 2, torch.float64)
    check(L.rotate(a, b, alpha=alpha, beta=beta), ref_rotate(a, b, alpha, beta), a, atol=1e-8, rtol=1e-8)


@pytest.mark.parametrize("shape", [(40, 6), (7, 30), (4, 3, 3, 3)])
def test_rotate_float32(shape):
    a = rand(shape, 3)
    b = a + 0.5 * rand(shape, 4)
    check(L.rotate(a, b, alpha=0.5, beta=0.25), ref_rotate(a, b, 0.5, 0.25), a, atol=2e-4, rtol=1e-3)


def test_rotate_properties():
    a = rand((50, 8), 5)
    b = a @ torch.linalg.qr(rand((8, 8), 6)).Q + 0.3  # b is a rotated and shifted copy of a
    torch.testing.assert_close(L.rotate(a, b), b, atol=1e-4, rtol=1e-4)  # exact alignment recovers b
    assert torch.equal(L.rotate(a, b, alpha=0.0, beta=0.0), a)
    torch.testing.assert_close(L.rotate(a, b, alpha=1.0, beta=1.0), b, atol=1e-4, rtol=1e-4)
    assert torch.equal(L.rotate(a, a.clone(), alpha=0.5), a)  # identical inputs
    # half-way twice is the whole way (centroid aside)
    R = L.orthogonal_procrustes(*L.svd_of_product(a - a.mean(0), b - b.mean(0)), proper=True)
    half = L.rotation_power(R, 0.5)
    torch.testing.assert_close(half @ half, R, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(half @ half.mT, torch.eye(8), atol=1e-5, rtol=1e-5)
    # the aligned tensor is at least as close to b as a is, and keeps a's row norms (centred)
    b2 = a + rand((50, 8), 7)
    out = L.rotate(a, b2)
    assert float((out - b2).norm()) <= float((a - b2).norm())
    ac = a - a.mean(0)
    oc = out - out.mean(0)
    torch.testing.assert_close(oc.norm(dim=1), ac.norm(dim=1), atol=1e-4, rtol=1e-4)


def test_rotate_vectors_empty_and_fp16():
    a, b = rand((9,), 1), rand((9,), 2)
    check(L.rotate(a, b, beta=0.3), 0.7 * npy(a) + 0.3 * npy(b), a, atol=1e-6, rtol=1e-6)
    s = torch.tensor(2.0)
    assert float(L.rotate(s, torch.tensor(4.0), beta=0.5)) == 3.0
    e = torch.zeros(0, 5)
    assert L.rotate(e, e, alpha=0.5).shape == (0, 5)
    a16, b16 = rand((30, 6), 3).half(), rand((30, 6), 4).half()
    out = L.rotate(a16, b16, alpha=0.5)
    assert out.dtype == torch.float16
    torch.testing.assert_close(out.float(), L.rotate(a16.float(), b16.float(), alpha=0.5), atol=2e-3, rtol=2e-3)


def test_rotate_inputs_not_modified():
    a, b = rand((10, 4), 1), rand((10, 4), 2)
    a0, b0 = a.clone(), b.clone()
    L.rotate(a, b, alpha=0.5, beta=0.5)
    assert torch.equal(a, a0) and torch.equal(b, b0)


def test_wide_rotation_is_identity_outside_the_inputs_rows():
    a = rand((3, 20), 1, torch.float64)
    b = rand((3, 20), 2, torch.float64)
    A, B = a - a.mean(0), b - b.mean(0)
    R = torch.tensor(ref_rotation(npy(A), npy(B), True))
    basis = torch.linalg.qr(torch.cat([A, B]).mT, mode="complete").Q
    outside = basis[:, 6:]  # orthogonal to every row of A and B
    torch.testing.assert_close(R @ outside, outside)
    # and the method's own result agrees with the full-space reference
    check(L.rotate(a, b, alpha=0.4), ref_rotate(a, b, 0.4, 0.0), a, atol=1e-8, rtol=1e-8)


# ------------------------------------------------------------------------------------------------
# truncate_rank


def ref_truncate(x, r):
    x = npy(x)
    m = x.reshape(x.shape[0], -1)
    U, S, Vh = np.linalg.svd(m, full_matrices=False)
    return ((U[:, :r] * S[:r]) @ Vh[:r]).reshape(x.shape)


def decaying(shape, seed, decay=0.7, dtype=torch.float32):
    """A matrix with well separated singular values (so the truncation is well defined)."""
    rng = np.random.default_rng(seed)
    m = shape[0]
    n = int(np.prod(shape[1:]))
    p = min(m, n)
    U = np.linalg.qr(rng.standard_normal((m, p)))[0]
    V = np.linalg.qr(rng.standard_normal((n, p)))[0]
    return torch.tensor(((U * decay ** np.arange(p)) @ V.T).reshape(shape), dtype=dtype)


@pytest.mark.parametrize("shape", [(30, 20), (20, 30), (8, 4, 3, 3), (6, 5, 4)])
@pytest.mark.parametrize("rank", [1, 3, 10])
def test_truncate_rank_matches_svd(shape, rank):
    d = decaying(shape, rank, dtype=torch.float64)
    check(L.truncate_rank(d, rank=rank), ref_truncate(d, rank), d, atol=1e-9, rtol=1e-7)
    d32 = d.float()
    check(L.truncate_rank(d32, rank=rank), ref_truncate(d32, rank), d32, atol=1e-5, rtol=1e-4)


def test_truncate_rank_ratio_and_limits():
    d = decaying((20, 30), 1)
    check(L.truncate_rank(d, rank_ratio=0.25), ref_truncate(d, 5), d, atol=1e-5)  # round(0.25·20) = 5
    check(L.truncate_rank(d, rank_ratio=0.49), ref_truncate(d, 10), d, atol=1e-5)  # round(9.8) = 10
    assert L.truncate_rank(d, rank=7, rank_ratio=0.1).shape == d.shape
    check(L.truncate_rank(d, rank=7, rank_ratio=0.9), ref_truncate(d, 7), d, atol=1e-5)  # rank wins
    assert torch.equal(L.truncate_rank(d, rank=20), d)  # full rank: unchanged
    assert torch.equal(L.truncate_rank(d, rank=500), d)
    assert torch.equal(L.truncate_rank(d, rank_ratio=0.0), torch.zeros_like(d))
    v = rand((17,), 1)
    assert torch.equal(L.truncate_rank(v, rank=1), v)  # vectors unchanged
    s = torch.tensor(3.0)
    assert torch.equal(L.truncate_rank(s, rank=1), s)
    e = torch.zeros(0, 4)
    assert L.truncate_rank(e, rank=1).shape == (0, 4)
    z = torch.zeros(12, 9)
    assert torch.equal(L.truncate_rank(z, rank=2), z)
    low = rand((12, 2), 1) @ rand((2, 9), 2)  # exactly rank 2
    torch.testing.assert_close(L.truncate_rank(low, rank=2), low, atol=1e-5, rtol=1e-5)


def test_truncate_rank_fp16_and_fp64():
    d = decaying((24, 16), 3)
    out = L.truncate_rank(d.half(), rank=4)
    assert out.dtype == torch.float16
    np.testing.assert_allclose(npy(out), ref_truncate(d.half(), 4), atol=2e-3, rtol=2e-2)
    assert L.truncate_rank(d.double(), rank=4).dtype == torch.float64


def test_truncate_rank_randomized_path():
    # short side above the exact-path limit, small rank: the randomized range finder
    rng = np.random.default_rng(0)
    m, n, k = 2100, 2300, 60
    U = np.linalg.qr(rng.standard_normal((m, k)))[0]
    V = np.linalg.qr(rng.standard_normal((n, k)))[0]
    s = 0.8 ** np.arange(k)
    d = torch.tensor((U * s) @ V.T, dtype=torch.float32)
    r = 12
    assert 4 * (r + 10) <= min(m, n) and min(m, n) > L._GRAM_EXACT_MAX
    out = L.truncate_rank(d, rank=r)
    expected = (U[:, :r] * s[:r]) @ V[:, :r].T  # the known best rank-r approximation
    np.testing.assert_allclose(npy(out), expected, atol=2e-6, rtol=0)
    assert torch.equal(out, L.truncate_rank(d, rank=r))  # fixed seed: reproducible


def test_sd_sized_tensors_finish_in_seconds():
    # SD1.5's largest tensors: the 49408×768 token embedding (rotated half-way) and a 1280×1280×3×3
    # conv (truncated to rank 128). Generous bounds (test machines are shared); on an idle 2-core
    # machine each takes a second or two.
    g = torch.Generator().manual_seed(0)
    emb_a = torch.randn((49408, 768), generator=g)
    emb_b = emb_a + 0.1 * torch.randn((49408, 768), generator=g)
    t0 = time.perf_counter()
    out = L.rotate(emb_a, emb_b, alpha=0.5, beta=0.1)
    assert time.perf_counter() - t0 < 60 and out.isfinite().all()
    del emb_a, emb_b, out
    conv = torch.randn((1280, 1280, 3, 3), generator=g)
    t0 = time.perf_counter()
    out = L.truncate_rank(conv, rank=128)
    assert time.perf_counter() - t0 < 60 and out.shape == conv.shape


def rotation_with_angles(angles, n, seed):
    """An n×n rotation turning by each angle in its own plane of a random orthonormal basis."""
    rng = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    D = np.eye(n)
    for i, th in enumerate(angles):
        c, s = np.cos(th), np.sin(th)
        D[2 * i:2 * i + 2, 2 * i:2 * i + 2] = [[c, -s], [s, c]]
    return Q @ D @ Q.T


HALF_TURNS = {  # angles near π (and ordinary ones), as close as each precision can resolve
    torch.float64: ([np.pi - 1e-3, np.pi - 1e-5, np.pi - 3e-7, 0.3, 1.0, 2.5, 1e-4], 1e-8),
    torch.float32: ([np.pi - 1e-2, np.pi - 1e-3, np.pi - 3e-4, 0.3, 1.0, 2.5, 1e-3], 2e-4),
}


@pytest.mark.parametrize("t", [0.3, 0.5, 0.77, 1.5])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_fractional_rotation_power_near_a_half_turn(t, dtype):
    angles, atol = HALF_TURNS[dtype]
    R = rotation_with_angles(angles, 16, seed=int(t * 100))
    Rt = torch.from_numpy(R).to(dtype)
    want = scipy.linalg.fractional_matrix_power(Rt.to(torch.float64).numpy(), t).real
    got = L.rotation_power(Rt, t)
    assert got.dtype == dtype
    np.testing.assert_allclose(got.to(torch.float64).numpy(), want, atol=atol, rtol=0)
    X = torch.from_numpy(np.random.default_rng(1).standard_normal((5, 16))).to(dtype)
    np.testing.assert_allclose((L.rotation_power(Rt, t, X)).to(torch.float64).numpy(),
                               X.to(torch.float64).numpy() @ want, atol=10 * atol, rtol=0)


@pytest.mark.parametrize("alpha", [0.5, 0.25])
def test_rotate_with_a_fractional_alpha_near_a_half_turn(alpha):
    # b is a turned copy of a, by angles up to almost a half turn; rotate(a, b, alpha) turns a by
    # the fraction alpha of that: compared with scipy's principal power of the Procrustes rotation
    rng = np.random.default_rng(4)
    A = rng.standard_normal((64, 12))
    Rtrue = rotation_with_angles([np.pi - 1e-3, np.pi - 2e-3, 0.7, 2.0], 12, seed=5)
    B = A @ Rtrue + 0.01 * rng.standard_normal((64, 12))
    a = torch.from_numpy(A).float()
    b = torch.from_numpy(B).float()
    got = L.rotate(a, b, alpha=alpha).double().numpy()
    Ad, Bd = a.double().numpy(), b.double().numpy()
    Ac, Bc = Ad - Ad.mean(0), Bd - Bd.mean(0)
    R, _ = scipy.linalg.orthogonal_procrustes(Ac, Bc)
    assert np.linalg.det(R) > 0
    want = Ac @ scipy.linalg.fractional_matrix_power(R, alpha).real + (1 - alpha) * Ad.mean(0) + alpha * Bd.mean(0)
    np.testing.assert_allclose(got, want, atol=2e-4, rtol=0)
