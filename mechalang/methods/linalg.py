"""Linear-algebra merge methods: orthogonal alignment (`rotate`) and low-rank truncation
(`truncate_rank`).

Both see a tensor as a matrix of "neurons" (rows) by features (columns):

- a vector (or scalar) has no such structure: `rotate` falls back to a weighted sum and
  `truncate_rank` returns it unchanged;
- a 2-D weight is itself;
- `rotate` follows sd-mecha for convolutions: a kernel with a spatial extent (kh·kw > 1) is a
  (out·in, kh·kw) matrix, so the rotation acts on the kh·kw kernel space; a 1×1 conv or any
  other tensor is (shape[0], −1);
- `truncate_rank` uses (shape[0], −1) always (kohya/LoRA's view of a conv kernel).

Sizes met in practice (SD1.5's 49408×768 token embedding, its 1280×1280×3×3 convs, LLM
projections) take seconds on a CPU: rotations are found in the smallest space that holds both
inputs' rows, and truncation goes through the Gram matrix of the short side (one GEMM and a small
symmetric eigendecomposition) or, for a small rank of a large matrix, a randomized range finder
with a fixed seed (so results stay reproducible).

Arithmetic runs in float32 (float64 when an input is float64); the result has the first input's
dtype and shape.
"""

import math

from . import _random
from ._lazy import torch
from .registry import Delta, Float, Int, Same, merge_method


def _work_dtype(*tensors):
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


def _finish(x, like):
    x = x.reshape(like.shape)
    return x if x.dtype == like.dtype else x.to(like.dtype)


# ------------------------------------------------------------------------------------------------
# Orthogonal Procrustes and powers of rotations


def _det_sign(x) -> float:
    return float(torch.linalg.slogdet(x)[0])


def svd_of_product(A, B):
    """The full SVD (U, S, Vh) of M = Aᵀ·B for A, B of shape (m, k), without forming an SVD of
    size k when m < k: with complete QRs Aᵀ = Qa·Ra and Bᵀ = Qb·Rb, M = Qa·(Ra·Rbᵀ)·Qbᵀ, so an
    SVD of the m×m core gives the leading singular vectors and the QRs' complements the rest
    (singular value 0)."""
    m, k = A.shape
    if m >= k:
        return torch.linalg.svd(A.mT @ B)
    Qa, Ra = torch.linalg.qr(A.mT, mode="complete")  # (k, k), (k, m)
    Qb, Rb = torch.linalg.qr(B.mT, mode="complete")
    Uc, S, Vch = torch.linalg.svd(Ra[:m] @ Rb[:m].mT)
    U = torch.cat([Qa[:, :m] @ Uc, Qa[:, m:]], 1)
    V = torch.cat([Qb[:, :m] @ Vch.mT, Qb[:, m:]], 1)
    S = torch.cat([S, S.new_zeros(k - m)])
    return U, S, V.mT


def orthogonal_procrustes(U, S, Vh, *, proper: bool = False):
    """The orthogonal R maximizing tr(Rᵀ·M), given the SVD M = U·diag(S)·Vh: for M = AᵀB, the R
    minimizing ‖A·R − B‖_F.

    Where M is rank-deficient, many R are optimal; this returns the one closest to the identity
    (largest trace), so directions that A and B do not constrain are not rotated. With
    proper=true, det R = +1 (a rotation, no reflection): the Kabsch correction, applied to the
    least constrained direction.
    """
    k = S.shape[0]
    top = float(S[0]) if k else 0.0
    r = int((S > top * k * torch.finfo(S.dtype).eps).sum()) if top > 0 else 0
    if r == k:
        R = U @ Vh
        if proper and _det_sign(R) < 0:
            U = U.clone()
            U[:, -1] = -U[:, -1]
            R = U @ Vh
        return R
    U0, V0 = U[:, r:], Vh[r:].mT
    P, _, Qh = torch.linalg.svd(U0.mT @ V0)  # polar factor: the completion nearest the identity
    R = U[:, :r] @ Vh[:r] + U0 @ (P @ Qh) @ V0.mT
    if proper and _det_sign(R) < 0:
        P[:, -1] = -P[:, -1]
        R = U[:, :r] @ Vh[:r] + U0 @ (P @ Qh) @ V0.mT
    return R


_CLUSTER = 1e-3  # eigenvalues of S closer than this are refined together


def _rotation_planes(S, K):
    """An orthonormal basis in which each vector lies in one rotation plane of R = S + K.

    The eigenvectors of S separate planes by cos θ; near a half turn cos θ ≈ −1 + sin²θ/2, so the
    planes of several angles near π have eigenvalues too close for their eigenvectors to be told
    apart. Within each cluster of close eigenvalues, the vectors are refined by the
    eigendecomposition of KᵀK restricted to the cluster (eigenvalues sin²θ, well separated
    relative to that small block)."""
    c, W = torch.linalg.eigh(S)
    gaps = (c[1:] - c[:-1]) > _CLUSTER
    bounds = [0, *(i + 1 for i in torch.nonzero(gaps).flatten().tolist()), c.shape[0]]
    parts = []
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        Wc = W[:, lo:hi]
        if hi - lo > 1:
            Kc = Wc.mT @ K @ Wc
            _, U = torch.linalg.eigh(Kc.mT @ Kc)
            Wc = Wc @ U
        parts.append(Wc)
    return torch.cat(parts, 1)


def rotation_power(R, t: float, X=None):
    """R^t for an orthogonal R (or X·R^t when X is given): the principal power, each rotation
    angle θ ∈ [0, π] scaled by t.

    Integer t: a matrix power. Fractional t (R a rotation, det R = +1): with S = (R + Rᵀ)/2 and
    K = (R − Rᵀ)/2, which commute, R acts on each eigenspace of S (eigenvalue cos θ) as
    cos θ·I + K, so R^t = cos(t·θ)(S) + (sin(t·θ)/sin θ)(S)·K. Computed in float64 (R is small: a
    features × features matrix), in a basis of vectors each in one rotation plane
    (`_rotation_planes`), with θ = atan2(sin θ, cos θ) where sin θ = ‖K·w‖: unlike arccos(cos θ),
    that stays accurate as θ nears π, also for several planes near π at once. A half turn
    (θ = π) has no preferred direction: it becomes cos(t·π)·I on its plane, the real part of the
    principal power.
    """
    t = float(t)
    if t == round(t):
        T = R if t == 1 else torch.linalg.matrix_power(R, int(round(t)))
        return T if X is None else X @ T
    R64 = R.to(torch.float64)
    S = (R64 + R64.mT) / 2
    K = (R64 - R64.mT) / 2
    W = _rotation_planes(S, K)
    s = torch.linalg.vector_norm(K @ W, dim=0)  # |sin θ| per basis vector, accurate to rounding
    c = torch.sum(W * (S @ W), dim=0)  # cos θ
    theta = torch.atan2(s, c)
    half_turn = s < 1e-12
    g = torch.where(half_turn, torch.where(theta < 1.5, t, 0.0), torch.sin(t * theta) / torch.where(half_turn, 1, s))
    f = torch.cos(t * theta)
    T = ((W * f) @ W.mT + ((W * g) @ W.mT) @ K).to(R.dtype)
    return T if X is None else X @ T


def _neuron_shape(shape):
    if len(shape) == 4 and shape[2] * shape[3] > 1:
        return shape[0] * shape[1], shape[2] * shape[3]
    return shape[0], math.prod(shape[1:])


@merge_method(formula="((1 − β)·A + β·B·Rᵀ)·R^α + (1 − α)·ā + α·b̄,  R = argmin_{RᵀR = I} ‖A·R − B‖,  "
                      "A = a − ā, B = b − b̄ (rows centred)",
              family="linalg")
def rotate(a: Same, b: Same, *, alpha: Float() = 1.0, beta: Float() = 0.0) -> Same:
    """Align `a` to `b` by an orthogonal transform of its feature space (sd-mecha's `rotate`).

    The tensor is a matrix of neurons (rows) by features; both are centred on their mean row
    (ā, b̄). R is the orthogonal Procrustes solution that best maps A's neurons onto B's, and
    α ("alignment") how far to turn: R^α (the principal power, from an eigendecomposition;
    restricted to proper rotations for a fractional α, as sd-mecha does), with the centroid moved by the same
    fraction. β interpolates the neurons themselves towards b's, expressed in a's frame (B·Rᵀ),
    before turning. So α = 1, β = 0 is `a` rotated onto `b`; α = 1, β = 1 is `b`; α = β = 0 is
    `a`. sd-mecha names these `alignment` and `alpha`.

    Where a matrix has fewer rows than half its columns, the rotation is found in the space
    spanned by both inputs' rows and is the identity elsewhere (the optimal rotation closest to the
    identity); sd-mecha uses a low-rank approximation there. Vectors and scalars fall back to
    (1 − β)·a + β·b; identical inputs return `a`.
    """
    alpha, beta = float(alpha), float(beta)
    if alpha == 0 and beta == 0:
        return a
    dtype = _work_dtype(a, b)
    if a.shape != b.shape:
        raise ValueError(f"shape mismatch: {tuple(a.shape)} and {tuple(b.shape)}")
    if a.dim() <= 1 or a.numel() == 0:
        return _finish(torch.lerp(a.to(dtype), b.to(dtype), beta), a)
    if torch.equal(a, b):
        return a
    m, d = _neuron_shape(a.shape)
    A = a.reshape(m, d).to(dtype)
    B = b.reshape(m, d).to(dtype)
    a_centroid, b_centroid = A.mean(0), B.mean(0)
    A = A - a_centroid
    B = B - b_centroid
    if 2 * m < d:
        Q = torch.linalg.qr(torch.cat([A, B], 0).mT).Q  # (d, 2m): holds every row of A and B
        Ak, Bk = A @ Q, B @ Q
    else:
        Q, Ak, Bk = None, A, B
    fractional = alpha != round(alpha)
    if fractional:  # R^α is sensitive near half turns: find R (and its power) in float64
        R = orthogonal_procrustes(*svd_of_product(Ak.double(), Bk.double()), proper=True).to(Ak.dtype)
    else:
        R = orthogonal_procrustes(*svd_of_product(Ak, Bk))
    if Ak.shape[0] >= Ak.shape[1]:
        # many neurons, few features: form R^α (k×k, cheap) and make one pass over the rows
        T = rotation_power(R, alpha)
        Y = Ak @ T if beta == 0 else Ak @ ((1 - beta) * T) + Bk @ (beta * (R.mT @ T))
    else:
        X = Ak if beta == 0 else torch.lerp(Ak, Bk @ R.mT, beta)
        Y = rotation_power(R, alpha, X)
    out = Y if Q is None else A + (Y - Ak) @ Q.mT
    out += torch.lerp(a_centroid, b_centroid, alpha)
    return _finish(out, a)


# ------------------------------------------------------------------------------------------------
# Low-rank truncation

_GRAM_EXACT_MAX = 2048  # short side up to which the Gram eigendecomposition runs in float64
_OVERSAMPLE = 10
_POWER_ITERATIONS = 4


def _low_rank_gram(A, r: int):
    """The best rank-r approximation of A through the Gram matrix of its short side."""
    m, n = A.shape
    tall = m >= n
    G = A.mT @ A if tall else A @ A.mT
    p = G.shape[0]
    _, vecs = torch.linalg.eigh(G.double() if p <= _GRAM_EXACT_MAX else G)
    V = vecs[:, p - r:].to(A.dtype)  # eigenvalues ascend: the r largest are last
    return (A @ V) @ V.mT if tall else V @ (V.mT @ A)


def _low_rank_randomized(A, r: int, q: int):
    """Rank-r approximation by a randomized range finder (Halko, Martinsson & Tropp 2011, alg.
    4.4: q samples, power iterations with re-orthonormalisation) and an SVD of the projection.
    The test matrix comes from a fixed seed: the same input gives the same output."""
    m, n = A.shape
    omega = _random.normal((n, q), 0, "truncate_rank", f"{m}x{n}x{q}", device=A.device, dtype=A.dtype)
    Y = A @ omega
    for _ in range(_POWER_ITERATIONS):
        Y = torch.linalg.qr(Y).Q
        Y = A @ torch.linalg.qr(A.mT @ Y).Q
    Q = torch.linalg.qr(Y).Q  # (m, q)
    U, S, Vh = torch.linalg.svd(Q.mT @ A, full_matrices=False)
    return (Q @ U[:, :r]) @ (S[:r, None] * Vh[:r])


def low_rank(A, r: int):
    """The best rank-r approximation of the matrix A (exact unless r is small next to a large
    short side, where the randomized range finder is much faster)."""
    p = min(A.shape)
    if r >= p:
        return A
    if r == 0:
        return torch.zeros_like(A)
    q = min(p, r + max(_OVERSAMPLE, r // 4))
    if p > _GRAM_EXACT_MAX and 4 * q <= p:
        return _low_rank_randomized(A, r, q)
    return _low_rank_gram(A, r)


@merge_method(formula="U_r·diag(σ₁ … σ_r)·V_rᵀ  of δ as a (shape[0], −1) matrix,  "
                      "r = rank, or round(rank_ratio · min(rows, cols)) when rank = 0",
              family="linalg")
def truncate_rank(delta: Delta, *, rank: Int(0) = 0, rank_ratio: Float(0.0, 1.0) = 0.5) -> Delta:
    """The best rank-r approximation of a delta (truncated SVD, Eckart–Young), as a LoRA of rank r
    would store it.

    The delta is a (shape[0], −1) matrix (a conv kernel is (out, in·kh·kw), as kohya extracts
    LoRAs). r = `rank` when it is positive, else round(rank_ratio · min(rows, cols)) (sd-mecha's
    `rank_ratio`). Vectors, scalars and deltas of rank ≤ r are returned unchanged.
    """
    if delta.dim() < 2 or delta.numel() == 0:
        return delta
    m = delta.shape[0]
    n = delta.numel() // m
    p = min(m, n)
    r = int(rank) if rank > 0 else math.floor(float(rank_ratio) * p + 0.5)
    if r >= p:
        return delta
    A = delta.reshape(m, n).to(_work_dtype(delta))
    return _finish(low_rank(A, r), delta)
