"""Linear merge methods against straightforward numpy implementations of their formulas."""

import math

import numpy as np
import pytest
import torch

from mechalang.methods import linear as L
from mechalang.methods.registry import Delta, Same, Weight

from ._blend_helpers import EMPTY_SHAPES, SHAPES, assert_matches, npy, rand, rands, signature

ALL_SHAPES = SHAPES + EMPTY_SHAPES


# ------------------------------------------------------------------------------------------------
# Registered signatures


@pytest.mark.parametrize("name, expected", [
    ("weighted_sum", "weighted_sum(a: same, b: same, alpha: float = 0.5) -> same"),
    ("sigmoid", "sigmoid(a: same, b: same, alpha: float in [0, 1] = 0.5) -> same"),
    ("inv_sigmoid", "inv_sigmoid(a: same, b: same, alpha: float in [0, 1] = 0.5) -> same"),
    ("weighted_subtraction", "weighted_subtraction(a: same, b: same, alpha: float in [0, 1] = 0.5, "
                             "beta: float in [0, 1) = 0.5) -> same"),
    ("add_difference", "add_difference(a: weight, b: weight, c: weight, alpha: float = 1.0) -> weight"),
    ("triple_sum", "triple_sum(a: same, b: same, c: same, alpha: float = 0.3333333333333333, "
                   "beta: float = 0.3333333333333333) -> same"),
    ("sum_twice", "sum_twice(a: same, b: same, c: same, alpha: float = 0.5, beta: float = 0.5) -> same"),
    ("n_average", "n_average(*models: same) -> same"),
    ("task_arithmetic", "task_arithmetic(base: weight, *deltas: delta, lambda: float = 1.0, "
                        "normalize: bool = false) -> weight"),
    ("copy", "copy(a: same) -> same"),
    ("clamp", "clamp(a: same, *bounds: same, stiffness: float in [0, 1] = 0.0) -> same"),
    ("max_abs", "max_abs(*models: same) -> same"),
    ("min_abs", "min_abs(*models: same) -> same"),
])
def test_signature(name, expected):
    spec = signature(name)
    assert spec.signature() == expected
    assert spec.family == "linear"
    assert spec.formula and spec.doc


def test_model_counts_and_spaces():
    assert signature("n_average").min_models == 1 and signature("n_average").max_models is None
    assert signature("max_abs").min_models == 1 and signature("min_abs").min_models == 1
    ta = signature("task_arithmetic")
    assert ta.models[0].space == Weight and ta.variadic.space == Delta and ta.returns == Weight
    assert ta.min_models == 2 and ta.max_models is None
    # `lambda` is the recipe name; the Python parameter is `lambda_`
    assert ta.hyper("lambda").arg == "lambda_"
    cl = signature("clamp")
    assert cl.min_models == 2 and cl.models[0].space == Same and cl.variadic.space == Same
    assert signature("weighted_sum").max_models == 2


def test_bounds_reject_out_of_range():
    ws = signature("weighted_sum").hyper("alpha").kind
    assert ws.check(1.5) is None and ws.check(-0.5) is None  # extrapolation allowed
    sg = signature("sigmoid").hyper("alpha").kind
    assert sg.check(1.01) is not None and sg.check(-0.01) is not None
    beta = signature("weighted_subtraction").hyper("beta").kind
    assert beta.check(1.0) is not None and beta.check(0.999) is None
    assert signature("clamp").hyper("stiffness").kind.check(2.0) is not None


# ------------------------------------------------------------------------------------------------
# Formulas


@pytest.mark.parametrize("shape", ALL_SHAPES)
@pytest.mark.parametrize("alpha", [0.0, 0.3, 1.0, 1.7, -0.4])
def test_weighted_sum(shape, alpha):
    a, b = rands(2, shape, seed=1)
    out = L.weighted_sum(a, b, alpha=alpha)
    assert_matches(out, (1 - alpha) * npy(a) + alpha * npy(b), like=a)


def test_weighted_sum_endpoints_are_exact():
    a, b = rands(2, (4, 5), seed=2)
    assert torch.equal(L.weighted_sum(a, b, alpha=0.0), a)
    assert torch.equal(L.weighted_sum(a, b, alpha=1.0), b)
    assert torch.equal(L.weighted_sum(a, a, alpha=0.37), a)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("alpha", [0.0, 0.1, 0.5, 0.8, 1.0])
def test_sigmoid_and_inverse(shape, alpha):
    a, b = rands(2, shape, seed=3)
    s = alpha * alpha * (3 - 2 * alpha)
    assert_matches(L.sigmoid(a, b, alpha=alpha), (1 - s) * npy(a) + s * npy(b), like=a)
    # inverse smoothstep: the t in [0, 1] with 3t² − 2t³ = alpha, found by bisection
    lo, hi = 0.0, 1.0
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if mid * mid * (3 - 2 * mid) < alpha else (lo, mid)
    t = (lo + hi) / 2
    assert_matches(L.inv_sigmoid(a, b, alpha=alpha), (1 - t) * npy(a) + t * npy(b), like=a,
                   atol=1e-5)


def test_sigmoid_fixed_points():
    a, b = rands(2, (9,), seed=4)
    for alpha in (0.0, 0.5, 1.0):
        ref = L.weighted_sum(a, b, alpha=alpha)
        torch.testing.assert_close(L.sigmoid(a, b, alpha=alpha), ref)
        torch.testing.assert_close(L.inv_sigmoid(a, b, alpha=alpha), ref)


@pytest.mark.parametrize("shape", ALL_SHAPES)
@pytest.mark.parametrize("alpha, beta", [(0.5, 0.5), (1.0, 0.9), (0.0, 0.3), (0.7, 0.0)])
def test_weighted_subtraction(shape, alpha, beta):
    a, b = rands(2, shape, seed=5)
    t = alpha * beta
    assert_matches(L.weighted_subtraction(a, b, alpha=alpha, beta=beta),
                   (npy(a) - t * npy(b)) / (1 - t), like=a, atol=1e-4, rtol=1e-4)


def test_weighted_subtraction_inverts_weighted_sum():
    x, b = rands(2, (6, 6), seed=6, dtype=torch.float64)
    mixed = L.weighted_sum(x, b, alpha=0.3 * 0.8)
    torch.testing.assert_close(L.weighted_subtraction(mixed, b, alpha=0.3, beta=0.8), x)


@pytest.mark.parametrize("shape", ALL_SHAPES)
@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0, -1.0, 2.5])
def test_add_difference(shape, alpha):
    a, b, c = rands(3, shape, seed=7)
    out = L.add_difference(a, b, c, alpha=alpha)
    assert_matches(out, npy(a) + alpha * (npy(b) - npy(c)), like=a)


def test_add_difference_zero_delta_and_alpha_zero():
    a, b = rands(2, (3, 4, 3, 3), seed=8)
    assert torch.equal(L.add_difference(a, b, b, alpha=1.7), a)
    assert torch.equal(L.add_difference(a, b, -b, alpha=0.0), a)


@pytest.mark.parametrize("shape", ALL_SHAPES)
@pytest.mark.parametrize("alpha, beta", [(1 / 3, 1 / 3), (0.0, 0.0), (1.0, 0.0), (0.0, 1.0), (0.6, 0.7)])
def test_triple_sum_and_sum_twice(shape, alpha, beta):
    a, b, c = rands(3, shape, seed=9)
    assert_matches(L.triple_sum(a, b, c, alpha=alpha, beta=beta),
                   (1 - alpha - beta) * npy(a) + alpha * npy(b) + beta * npy(c), like=a)
    assert_matches(L.sum_twice(a, b, c, alpha=alpha, beta=beta),
                   (1 - beta) * ((1 - alpha) * npy(a) + alpha * npy(b)) + beta * npy(c), like=a)


@pytest.mark.parametrize("shape", ALL_SHAPES)
@pytest.mark.parametrize("n", [1, 2, 5])
def test_n_average(shape, n):
    models = rands(n, shape, seed=10)
    out = L.n_average(*models)
    assert_matches(out, sum(npy(m) for m in models) / n, like=models[0])
    for m in models:  # inputs untouched
        assert m.dtype == torch.float32


def test_n_average_does_not_modify_inputs():
    models = rands(3, (5,), seed=11)
    before = [m.clone() for m in models]
    L.n_average(*models)
    for m, m0 in zip(models, before):
        assert torch.equal(m, m0)


@pytest.mark.parametrize("shape", ALL_SHAPES)
@pytest.mark.parametrize("lam, normalize", [(1.0, False), (0.5, False), (1.0, True), (-0.3, True)])
def test_task_arithmetic(shape, lam, normalize):
    base, *deltas = rands(4, shape, seed=12)
    out = L.task_arithmetic(base, *deltas, lambda_=lam, normalize=normalize)
    total = sum(npy(d) for d in deltas)
    if normalize:
        total = total / len(deltas)
    assert_matches(out, npy(base) + lam * total, like=base)


def test_task_arithmetic_zero_deltas_give_base():
    base = rand((4, 4), 13)
    zero = torch.zeros_like(base)
    assert torch.equal(L.task_arithmetic(base, zero, zero, lambda_=3.0), base)


def test_copy_is_identity():
    a, b = rands(2, (3, 3), seed=14)
    assert torch.equal(L.copy(a), a)


def _clamp_ref(a, bounds, stiffness):
    """Elementwise loops over numpy arrays."""
    a = npy(a).ravel()
    bs = np.stack([npy(b).ravel() for b in bounds])
    out = np.empty_like(a)
    for i in range(a.size):
        col = bs[:, i]
        hi, lo, mean = col.max(), col.min(), col.mean()
        above = min(v for v in col if v >= mean)
        below = max(v for v in col if v <= mean)
        hi2 = (1 - stiffness) * hi + stiffness * above
        lo2 = (1 - stiffness) * lo + stiffness * below
        out[i] = min(max(a[i], lo2), hi2)
    return out


@pytest.mark.parametrize("shape", ALL_SHAPES)
@pytest.mark.parametrize("n_bounds, stiffness", [(1, 0.0), (2, 0.0), (2, 1.0), (3, 0.0), (3, 0.5),
                                                 (4, 1.0), (5, 0.25)])
def test_clamp(shape, n_bounds, stiffness):
    a = rand(shape, 15, scale=2.0)
    bounds = rands(n_bounds, shape, seed=16)
    out = L.clamp(a, *bounds, stiffness=stiffness)
    assert_matches(out, _clamp_ref(a, bounds, stiffness), like=a)


def test_clamp_inside_bounds_is_unchanged():
    lo = torch.full((10,), -1.0)
    hi = torch.full((10,), 1.0)
    a = torch.linspace(-0.9, 0.9, 10)
    assert torch.equal(L.clamp(a, lo, hi), a)
    assert torch.equal(L.clamp(torch.full((10,), 5.0), lo, hi), hi)


def _select_ref(models, pick):
    arrs = np.stack([npy(m).ravel() for m in models])
    out = np.empty(arrs.shape[1])
    for i in range(arrs.shape[1]):
        best = arrs[0, i]
        for v in arrs[1:, i]:
            if pick(abs(v), abs(best)):
                best = v
        out[i] = best
    return out


@pytest.mark.parametrize("shape", ALL_SHAPES)
@pytest.mark.parametrize("n", [1, 2, 4])
def test_max_abs_min_abs(shape, n):
    models = rands(n, shape, seed=17)
    assert_matches(L.max_abs(*models), _select_ref(models, lambda x, y: x > y), like=models[0])
    assert_matches(L.min_abs(*models), _select_ref(models, lambda x, y: x < y), like=models[0])


def test_max_abs_keeps_sign_and_first_on_ties():
    a = torch.tensor([1.0, -3.0, 2.0, -2.0])
    b = torch.tensor([-2.0, 1.0, -2.0, 2.0])
    assert torch.equal(L.max_abs(a, b), torch.tensor([-2.0, -3.0, 2.0, -2.0]))
    assert torch.equal(L.min_abs(a, b), torch.tensor([1.0, 1.0, 2.0, -2.0]))


# ------------------------------------------------------------------------------------------------
# Half precision inputs: computed in float32, returned as the first input's dtype


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_inputs(dtype):
    a, b, c = rands(3, (4, 3, 3, 3), seed=18, dtype=dtype)
    A, B, C = npy(a), npy(b), npy(c)
    assert_matches(L.weighted_sum(a, b, alpha=0.25), 0.75 * A + 0.25 * B, like=a)
    assert_matches(L.add_difference(a, b, c, alpha=0.5), A + 0.5 * (B - C), like=a)
    assert_matches(L.sigmoid(a, b, alpha=0.3), L.sigmoid(a.float(), b.float(), alpha=0.3).double().numpy(),
                   like=a)
    assert_matches(L.n_average(a, b, c), (A + B + C) / 3, like=a)
    assert_matches(L.task_arithmetic(a, b, c, lambda_=0.5), A + 0.5 * (B + C), like=a)
    assert_matches(L.clamp(a, b, c, stiffness=0.5), _clamp_ref(a, [b, c], 0.5), like=a)
    assert_matches(L.max_abs(a, b, c), _select_ref([a, b, c], lambda x, y: x > y), like=a)
    assert_matches(L.weighted_subtraction(a, b, alpha=0.5, beta=0.5), (A - 0.25 * B) / 0.75, like=a)


def test_float64_stays_float64():
    a, b = rands(2, (3,), seed=19, dtype=torch.float64)
    assert L.weighted_sum(a, b).dtype == torch.float64
    assert L.n_average(a, b).dtype == torch.float64
    assert math.isclose(float(L.weighted_sum(a, b, alpha=0.5)[0]), float((a[0] + b[0]) / 2), rel_tol=1e-12)


# ------------------------------------------------------------------------------------------------
# Engine contract: element-wise methods may be evaluated on 1-D slices; modules load without torch

ELEMENTWISE = ["weighted_sum", "sigmoid", "inv_sigmoid", "weighted_subtraction", "add_difference",
               "triple_sum", "sum_twice", "n_average", "task_arithmetic", "copy", "clamp", "max_abs",
               "min_abs"]


@pytest.mark.parametrize("name", ELEMENTWISE)
def test_elementwise_methods_commute_with_slicing(name):
    spec = signature(name)
    assert spec.elementwise is True
    n_models = max(spec.min_models, 3 if spec.variadic else len(spec.models))
    args = rands(n_models, (4, 5, 3), seed=98)
    whole = spec.func(*args).reshape(-1)
    flat = [x.reshape(-1) for x in args]
    parts = torch.cat([spec.func(*[x[i:i + 17] for x in flat]) for i in range(0, 60, 17)])
    torch.testing.assert_close(parts, whole)


def test_method_modules_do_not_import_torch():
    import subprocess
    import sys

    # only this family's modules (REGISTRY.names() would load every built-in module)
    code = ("import sys\n"
            "from mechalang.methods import linear, spherical, sd_mergers\n"
            "specs = [linear.weighted_sum.__merge_method__, spherical.slerp.__merge_method__,\n"
            "         sd_mergers.crossover.__merge_method__]\n"
            "assert [s.name for s in specs] == ['weighted_sum', 'slerp', 'crossover'], specs\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
