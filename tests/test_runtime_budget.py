"""Memory of non-element-wise methods: the streamed evaluation of TIES (slices and passes) against
whole-tensor TIES and an independent kthvalue-based TIES, the streamed selection against
torch.kthvalue, and the budget bounding the work in flight."""

from __future__ import annotations

import inspect
import math
import threading
import time

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from mechalang.methods._select import StreamedKthSmallest
from mechalang.methods.registry import MethodRegistry, Same, build_spec
from mechalang.methods.sparse import _ModelStockStream, _TiesStream, model_stock, ties
from mechalang.runtime import executor as executor_module
from mechalang.runtime.budget import MemoryBudget, item_estimate
from mechalang.runtime.executor import execute
from mechalang.runtime.ops import KeyProgram
from mechalang.runtime.plan import Op, Read, layout

from .test_runtime_helpers import add, models, output, plan, registry_with, save, sub

BIG = (25_000, 100)  # 2.5 M elements: more than two slices


def three_models(tmp_path, *, zeros=False, dtype=torch.bfloat16):
    """A base and two fine-tunes (base + a small delta, many equal bf16 magnitudes)."""
    g = torch.Generator().manual_seed(7)
    shapes = {"big": BIG, "w": (64, 48), "b": (48,)}
    base = {k: (torch.randn(s, generator=g) * 0.02).to(dtype) for k, s in shapes.items()}
    fts = []
    for _ in range(2):
        fts.append({k: (v.float() + (0 if zeros else 1) * torch.randn(v.shape, generator=g) * 0.002
                        ).to(dtype) for k, v in base.items()})
    paths = [save(tmp_path / f"{n}.safetensors", sd) for n, sd in
             zip(("base", "ft0", "ft1"), [base, *fts])]
    return [base, *fts], models(*paths)


def ties_entries(ms, hypers=(("density", 0.2),)):
    mb, m0, m1 = ms
    return [(k, add(mb.read(k), Op("ties", (sub(m0.read(k), mb.read(k)), sub(m1.read(k), mb.read(k))),
                                   hypers)), mb.dtype(k), mb.shape(k)) for k in mb.keys()]


def whole_only_registry() -> MethodRegistry:
    reg = MethodRegistry()
    reg.register(build_spec(ties))  # no stream: every key whole
    return reg


def reference_ties(deltas, density, *, normalize=True, lambda_=1.0):
    """TIES written from the paper with torch.kthvalue: keep |δ| ≥ the (N − k + 1)-th smallest
    magnitude, elect the sign of the sum, average the agreeing entries."""
    D = torch.stack([d.reshape(-1).float() for d in deltas])
    N = D.shape[1]
    keep = max(1, math.floor(density * N + 1e-7))
    if density < 1 and keep < N:
        for row in D:
            row[row.abs() < row.abs().kthvalue(N - keep + 1).values] = 0
    sign = torch.where(D.sum(0) >= 0, 1.0, -1.0)
    agree = (D * sign) > 0
    out = (D * agree).sum(0)
    if normalize:
        out = out / agree.sum(0).clamp_min(1)
    return (out * lambda_).reshape(deltas[0].shape)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_streamed_selection_equals_kthvalue(dtype):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(70_001, generator=g, dtype=dtype).abs().to(torch.bfloat16).to(dtype)  # ties
    x[:500] = 0
    for k in (1, 2, 501, 35_000, 70_000, 70_001):
        sel = StreamedKthSmallest(k, dtype)
        passes = 0
        while not sel.done:
            for lo in range(0, x.numel(), 4096):
                sel.observe(x[lo:lo + 4096])
            sel.end_pass()
            passes += 1
        assert passes == (2 if dtype == torch.float32 else 4)
        assert sel.value().item() == x.kthvalue(k).values.item(), k
    with pytest.raises(ValueError, match="outside"):
        sel = StreamedKthSmallest(10, torch.float32)
        sel.observe(torch.ones(5))
        sel.end_pass()


@pytest.mark.parametrize("kw", [{}, {"density": 0.5, "normalize": False},
                                {"consensus": "count", "lambda_": 0.7}, {"density": 1.0}])
def test_ties_stream_is_bit_identical_to_ties(kw):
    g = torch.Generator().manual_seed(2)
    n = 300_001
    deltas = [(torch.randn(n, generator=g) * 0.01).to(torch.bfloat16).float() for _ in range(3)]
    whole = ties(*deltas, **kw)
    stream = _TiesStream(n, **kw)
    while stream.wants_pass():
        for lo in range(0, n, 65536):
            stream.observe([d[lo:lo + 65536] for d in deltas])
        stream.end_pass()
    parts = torch.cat([stream.apply([d[lo:lo + 65536] for d in deltas]) for lo in range(0, n, 65536)])
    assert torch.equal(whole.view(torch.int32), parts.view(torch.int32))


@pytest.mark.parametrize("zeros", [False, True])
def test_streamed_ties_key_equals_whole_and_reference(tmp_path, zeros):
    sds, ms = three_models(tmp_path, zeros=zeros)
    entries = ties_entries(ms)
    streamed, whole = tmp_path / "streamed.safetensors", tmp_path / "whole.safetensors"
    execute(plan(ms, output(streamed, entries)), threads=2)
    execute(plan(ms, output(whole, entries)), threads=2, registry=whole_only_registry())
    assert streamed.read_bytes() == whole.read_bytes()
    got = load_file(str(streamed))
    base, ft0, ft1 = sds
    for key in ("big", "w"):
        deltas = [ft0[key].float() - base[key].float(), ft1[key].float() - base[key].float()]
        ref = (base[key].float() + reference_ties(deltas, 0.2)).to(torch.bfloat16)
        assert torch.equal(got[key].view(torch.int16), ref.view(torch.int16)), key


def reference_model_stock(base, fts, filter_wise):
    """Model Stock from the paper, in float64 numpy: per row (or for the whole tensor) the mean
    pairwise cosine of the deltas, clamped at 0, t = N·cos/(1 + (N − 1)·cos)."""
    b = base.double().numpy()
    rows = b.shape[0] if filter_wise else 1
    b2 = b.reshape(rows, -1)
    ds = [f.double().numpy().reshape(rows, -1) - b2 for f in fts]
    n = len(ds)
    cos = np.zeros(rows)
    for i in range(n):
        for j in range(i + 1, n):
            num = (ds[i] * ds[j]).sum(1)
            den = np.sqrt((ds[i] ** 2).sum(1) * (ds[j] ** 2).sum(1))
            cos += np.where(den > 0, num / np.where(den > 0, den, 1), 0)
    cos = np.clip(cos / (n * (n - 1) / 2), 0, None)
    t = n * cos / (1 + (n - 1) * cos)
    mean = sum(f.double().numpy().reshape(rows, -1) for f in fts) / n
    return (b2 + t[:, None] * (mean - b2)).reshape(b.shape)


@pytest.mark.parametrize("filter_wise", [False, True])
def test_streamed_model_stock_key_equals_whole_and_reference(tmp_path, filter_wise):
    """A key of more than two slices goes through `_ModelStockStream` (one pass of Gram matrices,
    then the combination slice by slice), and comes out byte for byte as the whole-tensor method
    gives it, and as an independent float64 computation up to bf16 rounding."""
    sds, ms = three_models(tmp_path)
    mb, m0, m1 = ms
    hypers = (("filter_wise", filter_wise),)
    entries = [(k, Op("model_stock", (mb.read(k), m0.read(k), m1.read(k)), hypers), mb.dtype(k), mb.shape(k))
               for k in mb.keys()]
    whole_reg = MethodRegistry()
    whole_reg.register(build_spec(model_stock))
    streamed, whole = tmp_path / "streamed.safetensors", tmp_path / "whole.safetensors"
    execute(plan(ms, output(streamed, entries)), threads=2)
    execute(plan(ms, output(whole, entries)), threads=2, registry=whole_reg)
    assert streamed.read_bytes() == whole.read_bytes()
    got = load_file(str(streamed))
    base, ft0, ft1 = sds
    for key in ("big", "w"):
        ref = reference_model_stock(base[key], [ft0[key], ft1[key]], filter_wise)
        np.testing.assert_allclose(got[key].double().numpy(), ref, rtol=2 ** -7, atol=1e-6)


@pytest.mark.parametrize("shape,filter_wise", [((3001, 700), True), ((3001, 700), False), ((2_100_001,), False),
                                               ((7, 3, 100_003), True)])
def test_model_stock_stream_is_bit_identical_to_model_stock(shape, filter_wise):
    """Driven by hand with slices of 1 Mi and 2 Mi elements (the engine's CPU slice and a multiple,
    as on a GPU): rows that straddle slices and blocks, a last partial block."""
    g = torch.Generator().manual_seed(4)
    base = torch.randn(shape, generator=g)
    fts = [base + 0.1 * torch.randn(shape, generator=g) for _ in range(3)]
    whole = model_stock(base, *fts, filter_wise=filter_wise).reshape(-1)
    flat = [x.reshape(-1) for x in (base, *fts)]
    n = base.numel()
    for step in (1 << 20, 1 << 21):
        stream = _ModelStockStream(n, shape=shape, filter_wise=filter_wise)
        spans = [(lo, min(lo + step, n)) for lo in range(0, n, step)]
        while stream.wants_pass():
            for lo, hi in spans:
                stream.observe([f[lo:hi] for f in flat])
            stream.end_pass()
        parts = torch.cat([stream.apply([f[lo:hi] for f in flat]) for lo, hi in spans])
        assert torch.equal(parts.view(torch.int32), whole.view(torch.int32)), step


def test_streamed_key_sees_only_slices(tmp_path):
    """The big key never reaches the whole-tensor method; its stream sees slices of at most
    SLICE_ELEMS elements; the small keys (below two slices) are computed whole."""
    sizes: list[int] = []
    whole_calls: list[int] = []

    class Recording(_TiesStream):
        def observe(self, args):
            sizes.append(args[0].numel())
            super().observe(args)

        def apply(self, args):
            sizes.append(args[0].numel())
            return super().apply(args)

    def counted(*deltas, **kw):
        whole_calls.append(deltas[0].numel())
        return ties(*deltas, **kw)

    counted.__signature__ = inspect.signature(ties)  # the same declarations as `ties`
    reg = MethodRegistry()
    reg.register(build_spec(counted, name="ties", streamed=Recording))
    _, ms = three_models(tmp_path)
    execute(plan(ms, output(tmp_path / "o.safetensors", ties_entries(ms))), threads=2, registry=reg)
    assert max(sizes) == executor_module.SLICE_ELEMS
    n = BIG[0] * BIG[1]
    slices = math.ceil(n / executor_module.SLICE_ELEMS)
    assert len(sizes) == 3 * slices  # two passes of the float32 selection, then the result
    assert sorted(whole_calls) == [48, 64 * 48]


def test_byte_identical_across_threads_budgets_and_precision(tmp_path):
    _, ms = three_models(tmp_path)
    entries = ties_entries(ms, (("density", 0.3), ("consensus", "count")))
    for precision in ("fp32", "fp64"):
        results = set()
        for threads, budget in ((1, None), (2, 1), (4, 1 << 40), (3, 50 << 20)):
            out = tmp_path / f"o{threads}.safetensors"
            execute(plan(ms, output(out, entries), precision=precision), threads=threads,
                    memory_budget=budget)
            results.add(out.read_bytes())
        execute(plan(ms, output(out, entries), precision=precision), threads=2,
                registry=whole_only_registry())
        results.add(out.read_bytes())
        assert len(results) == 1, precision


def test_estimate_counts_a_whole_tensor_methods_copy_and_scratch():
    a = Read(0, "k", "F16", (1000,), 0, 2000)
    b = Read(1, "k", "F16", (1000,), 0, 2000)

    def prog(op):
        return KeyProgram("k", layout([("k", Op(op, (a, b)), "F16", (1000,))]))

    def whole_method(a: Same, b: Same) -> Same:
        return a + b

    def slice_method(a: Same, b: Same) -> Same:
        return a + b

    reg = registry_with(whole_method, slice_method, elementwise=(slice_method,))
    ew = item_estimate(prog("slice_method"), None, 4, reg)
    assert ew == 1000 * (2 * (2 + 4) + 4 + 2)  # two reads raw + fp32, the result, the output
    # not element-wise: it may also copy both arguments (a stacked work tensor) and hold two more
    assert item_estimate(prog("whole_method"), None, 4, reg) == ew + 1000 * 4 * (2 + 2)
    # over slices: the same per element, for the slice's elements
    assert item_estimate(prog("whole_method"), 100, 4, reg) * 10 == \
        item_estimate(prog("whole_method"), None, 4, reg)


def test_budget_bounds_non_elementwise_items_in_flight(tmp_path):
    active, peak = [0], [0]
    lock = threading.Lock()

    def slow(a: Same, b: Same) -> Same:  # not element-wise: each key is one whole item
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        time.sleep(0.05)
        with lock:
            active[0] -= 1
        return a * 0.5 + b * 0.5

    reg = registry_with(slow)
    g = torch.Generator().manual_seed(3)
    sds = [{f"k{i}": torch.randn(64, 48, generator=g) for i in range(8)} for _ in range(2)]
    ms = models(*(save(tmp_path / f"m{j}.safetensors", sd) for j, sd in enumerate(sds)))
    entries = [(k, Op("slow", (ms[0].read(k), ms[1].read(k))), "F32", (64, 48)) for k in sds[0]]
    one = item_estimate(KeyProgram("k0", [t for t in layout(entries[:1])]), None, 4, reg)
    outs = []
    for budget, most in ((one, 1), (2 * one, 2), (100 * one, 4)):
        peak[0] = 0
        out = tmp_path / f"o{most}.safetensors"
        execute(plan(ms, output(out, entries)), threads=4, memory_budget=budget, registry=reg)
        assert 1 <= peak[0] <= most, (budget, peak[0])
        outs.append(out.read_bytes())
    assert outs[0] == outs[1] == outs[2]
    got = load_file(str(out))
    assert torch.equal(got["k3"], sds[0]["k3"] * 0.5 + sds[1]["k3"] * 0.5)


def test_memory_budget_admits_an_item_alone():
    b = MemoryBudget(100)
    assert b.admits(1000, alone=True)
    assert not b.admits(101, alone=False)
    b.take(60)
    assert b.admits(40, alone=False) and not b.admits(41, alone=False)
    b.give(60)
    assert b.used == 0
