"""The streaming executor against independent torch computations on small files."""

import threading

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors import safe_open
from safetensors.torch import load_file

from mechalang.diagnostics import Span
from mechalang.methods.registry import Float, KeyName, Same
from mechalang.runtime import executor as executor_module
from mechalang.runtime.errors import RuntimeFailure
from mechalang.runtime.executor import execute
from mechalang.runtime.plan import Op

from .test_runtime_helpers import add, header_of, models, output, plan, registry_with, save, scale, sub, temp_leftovers

BIG = 2_500_000  # elements: more than two slices of an element-wise key


def two_models(tmp_path, dtype=torch.float16, big=False):
    g = torch.Generator().manual_seed(0)
    shapes = {"w": (64, 48), "b": (48,), "scalar": (), "empty": (0, 4)}
    if big:
        shapes["big"] = (BIG // 100, 100)
    a = {k: torch.randn(s, generator=g).to(dtype) for k, s in shapes.items()}
    b = {k: torch.randn(s, generator=g).to(dtype) for k, s in shapes.items()}
    a["ids"] = torch.arange(77).reshape(1, 77)
    b["ids"] = torch.arange(77).reshape(1, 77) * 3
    a["mask"] = torch.tensor([True, False, True])
    b["mask"] = torch.tensor([False, False, True])
    a["u8"] = torch.arange(10, dtype=torch.uint8)
    b["u8"] = torch.zeros(10, dtype=torch.uint8)
    pa = save(tmp_path / "a.safetensors", a, {"from": "a"})
    pb = save(tmp_path / "b.safetensors", b)
    return a, b, models(pa, pb)


def ws_entries(ma, mb, alpha, *, out_dtype=None):
    entries = []
    for key in ma.keys():
        ra, rb = ma.read(key), mb.read(key)
        if ra.dtype in ("I64", "BOOL", "U8"):
            entries.append((key, ra, ra.dtype, ra.shape))
        else:
            expr = add(scale(ra, 1 - alpha), scale(rb, alpha))
            entries.append((key, expr, out_dtype or ra.dtype, ra.shape))
    return entries


def test_weighted_sum_equals_torch(tmp_path):
    a, b, (ma, mb) = two_models(tmp_path, big=True)
    out = tmp_path / "out.safetensors"
    stats = execute(plan([ma, mb], output(out, ws_entries(ma, mb, 0.3), {"recipe": "ws"})),
                    threads=2)
    got = load_file(str(out))
    assert set(got) == set(a)
    for key in a:
        if a[key].dtype.is_floating_point:
            ref = (a[key].float() * 0.7 + b[key].float() * 0.3).to(torch.float16)
        else:
            ref = a[key]  # non-float tensors: copied from the first input, never interpolated
        assert got[key].dtype == ref.dtype, key
        assert torch.equal(got[key], ref), key
    with safe_open(str(out), "pt") as f:
        assert f.metadata() == {"recipe": "ws"}
    assert temp_leftovers(tmp_path) == []
    assert stats.keys == len(a)
    assert stats.outputs[0].path == str(out)
    assert stats.outputs[0].keys == len(a)
    assert stats.outputs[0].bytes == out.stat().st_size
    assert stats.first_key_seconds is not None and stats.first_key_seconds <= stats.seconds
    assert stats.peak_rss > 0
    assert stats.bytes_read == sum(v.numel() * v.element_size() for k, v in a.items()
                                   if v.dtype.is_floating_point) * 2 \
        + sum(v.numel() * v.element_size() for v in a.values() if not v.dtype.is_floating_point)


def test_byte_identical_for_any_thread_count(tmp_path):
    def rescale(a: Same, b: Same, *, alpha: Float() = 0.5) -> Same:
        # a whole-tensor reduction: its result would depend on torch's intra-op threads
        return torch.lerp(a, b, alpha) * (b.norm() / a.norm())

    reg = registry_with(rescale)
    a, b, (ma, mb) = two_models(tmp_path, dtype=torch.float32, big=True)
    entries = [(k, Op("rescale", (ma.read(k), mb.read(k)), (("alpha", 0.25),)) if
                ma.dtype(k) == "F32" else ma.read(k), ma.dtype(k), ma.shape(k)) for k in ma.keys()]
    results = []
    for threads in (1, 4):
        out = tmp_path / f"out{threads}.safetensors"
        execute(plan([ma, mb], output(out, entries)), threads=threads, registry=reg)
        results.append(out.read_bytes())
    assert results[0] == results[1]
    got = load_file(str(tmp_path / "out1.safetensors"))
    ref = torch.lerp(a["w"], b["w"], 0.25) * (b["w"].norm() / a["w"].norm())
    torch.testing.assert_close(got["w"], ref, rtol=1e-6, atol=1e-6)


def test_shared_subexpressions_run_once_per_key(tmp_path):
    calls: list[str] = []
    lock = threading.Lock()

    def counted(a: Same, b: Same, *, alpha: Float() = 0.5, key: KeyName = "") -> Same:
        with lock:
            calls.append(key)
        return a + alpha * (b - a)

    reg = registry_with(counted)
    a, b, (ma, mb) = two_models(tmp_path, dtype=torch.float32)
    floats = [k for k in ma.keys() if ma.dtype(k) == "F32"]

    def node(k):  # a fresh but equal object each time: sharing is structural
        return Op("counted", (ma.read(k), mb.read(k)), (("alpha", 0.5),))

    out1, out2 = tmp_path / "x.safetensors", tmp_path / "y.safetensors"
    p = plan([ma, mb],
             output(out1, [(k, node(k), "F32", ma.shape(k)) for k in floats]),
             output(out2, [(k, add(node(k), scale(node(k), 2.0)), "F16", ma.shape(k))
                           for k in floats]))
    execute(p, threads=2, registry=reg)
    assert sorted(calls) == sorted(floats)  # once per key, though used three times
    x, y = load_file(str(out1)), load_file(str(out2))
    for k in floats:
        mid = a[k] + 0.5 * (b[k] - a[k])
        assert torch.equal(x[k], mid)
        assert torch.equal(y[k], (mid + mid * 2.0).to(torch.float16))


def test_non_float_tensors_are_copied_byte_for_byte(tmp_path):
    a, b, (ma, mb) = two_models(tmp_path)
    out = tmp_path / "out.safetensors"
    keys = ["ids", "mask", "u8"]
    execute(plan([ma, mb], output(out, [(k, mb.read(k), mb.dtype(k), mb.shape(k)) for k in keys])),
            threads=1)
    got = load_file(str(out))
    for k in keys:
        assert got[k].dtype == b[k].dtype and torch.equal(got[k], b[k])
    assert header_of(out)["ids"]["dtype"] == "I64"


def test_fp64_precision(tmp_path):
    g = torch.Generator().manual_seed(3)
    a = {"x": torch.randn(1000, generator=g, dtype=torch.float32)}
    b = {"x": torch.randn(1000, generator=g, dtype=torch.float32)}
    ma, mb = models(save(tmp_path / "a.safetensors", a), save(tmp_path / "b.safetensors", b))
    expr = add(scale(ma.read("x"), 1 / 3), scale(mb.read("x"), 2 / 3))
    for precision, dt in (("fp64", torch.float64), ("fp32", torch.float32)):
        out = tmp_path / f"{precision}.safetensors"
        execute(plan([ma, mb], output(out, [("x", expr, "F64", (1000,))]), precision=precision),
                threads=1)
        ref = (a["x"].to(dt) * (1 / 3) + b["x"].to(dt) * (2 / 3)).to(torch.float64)
        got = load_file(str(out))["x"]
        assert got.dtype == torch.float64 and torch.equal(got, ref), precision
    assert not torch.equal(load_file(str(tmp_path / "fp64.safetensors"))["x"],
                           load_file(str(tmp_path / "fp32.safetensors"))["x"])


@pytest.mark.parametrize("dtype_name,torch_dtype", [
    ("F16", torch.float16), ("BF16", torch.bfloat16), ("F32", torch.float32),
    ("F8_E4M3", torch.float8_e4m3fn), ("F8_E5M2", torch.float8_e5m2)])
def test_cast_to_output_dtype(tmp_path, dtype_name, torch_dtype):
    a, b, (ma, mb) = two_models(tmp_path, dtype=torch.float32)
    out = tmp_path / "out.safetensors"
    # the same key to two outputs in different dtypes, and a plain (unmerged) read cast too
    execute(plan([ma, mb],
                 output(out, [("w", sub(ma.read("w"), mb.read("w")), dtype_name, (64, 48)),
                              ("b", ma.read("b"), dtype_name, (48,))]),
                 output(tmp_path / "f32.safetensors",
                        [("w", sub(ma.read("w"), mb.read("w")), "F32", (64, 48))])), threads=2)
    got = load_file(str(out))
    assert got["w"].dtype == torch_dtype
    assert torch.equal(got["w"].view(torch.uint8), (a["w"] - b["w"]).to(torch_dtype).view(torch.uint8))
    assert torch.equal(got["b"].view(torch.uint8), a["b"].to(torch_dtype).view(torch.uint8))
    assert torch.equal(load_file(str(tmp_path / "f32.safetensors"))["w"], a["w"] - b["w"])


def test_sliced_keys_equal_whole_keys(tmp_path):
    """An element-wise method is run on slices of a large key; the bytes are the same."""
    sizes: list[int] = []

    def lerp_method(a: Same, b: Same, *, alpha: Float() = 0.5) -> Same:
        sizes.append(a.numel())
        return torch.lerp(a, b, alpha)

    a, b, (ma, mb) = two_models(tmp_path, big=True)
    entries = [(k, Op("lerp_method", (ma.read(k), mb.read(k)), (("alpha", 0.7),)), "F16",
                ma.shape(k)) for k in ("w", "big")]
    outs = {}
    for ew in (False, True):
        reg = registry_with(lerp_method, elementwise=(lerp_method,) if ew else ())
        sizes.clear()
        out = tmp_path / f"ew{ew}.safetensors"
        execute(plan([ma, mb], output(out, entries)), threads=2, registry=reg)
        outs[ew] = out.read_bytes()
        assert max(sizes) == (executor_module.SLICE_ELEMS if ew else BIG)
    assert outs[True] == outs[False]
    got = load_file(str(tmp_path / "ewTrue.safetensors"))
    assert torch.equal(got["big"], torch.lerp(a["big"].float(), b["big"].float(), 0.7).half())


def test_large_whole_keys_start_first_and_bytes_do_not_change(tmp_path):
    """Keys too large to slice that a method must compute whole start first, largest first (so
    the largest does not run alone at the end); the rest keep plan order; the file is the same."""
    calls: list[str] = []

    def scaled(a: Same, *, key: KeyName = "") -> Same:
        calls.append(key)
        return a * (1.0 / a.abs().max())  # a whole-tensor reduction: not element-wise

    g = torch.Generator().manual_seed(3)
    shapes = {"small": (64, 48), "big": (BIG // 100, 100), "tiny": (7,), "bigger": (BIG // 50, 100)}
    tensors = {k: torch.randn(s, generator=g) for k, s in shapes.items()}
    (m,) = models(save(tmp_path / "m.safetensors", tensors))
    reg = registry_with(scaled)
    entries = [(k, Op("scaled", (m.read(k),), ()), "F16", shapes[k]) for k in shapes]
    files = []
    for threads in (1, 3):
        calls.clear()
        out = tmp_path / f"out{threads}.safetensors"
        execute(plan([m], output(out, entries)), threads=threads, registry=reg)
        files.append(out.read_bytes())
        if threads == 1:
            assert calls == ["bigger", "big", "small", "tiny"]
    assert files[0] == files[1]
    got = load_file(str(tmp_path / "out1.safetensors"))
    assert set(got) == set(shapes)
    for k, t in tensors.items():
        assert torch.equal(got[k], (t * (1.0 / t.abs().max())).half())


def test_hyperparameter_python_names_and_key_param(tmp_path):
    seen = {}

    def keyed(a: Same, *, lambda_: Float() = 1.0, key: KeyName = "") -> Same:
        seen[key] = lambda_
        return a * lambda_

    reg = registry_with(keyed)
    a, b, (ma, mb) = two_models(tmp_path, dtype=torch.float32)
    out = tmp_path / "out.safetensors"
    execute(plan([ma, mb], output(out, [("w", Op("keyed", (ma.read("w"),), (("lambda", 2.5),)),
                                         "F32", (64, 48))])), threads=1, registry=reg)
    assert seen == {"w": 2.5}
    assert torch.equal(load_file(str(out))["w"], a["w"] * 2.5)


def test_progress_reports_every_key_and_byte(tmp_path):
    a, b, (ma, mb) = two_models(tmp_path, big=True)
    out = tmp_path / "out.safetensors"
    p = plan([ma, mb], output(out, ws_entries(ma, mb, 0.5)))
    seen = {"keys": 0, "bytes": 0}

    def progress(keys, nbytes):
        seen["keys"] += keys
        seen["bytes"] += nbytes

    execute(p, threads=2, progress=progress)
    assert seen == {"keys": len(a), "bytes": p.outputs[0].data_bytes}
    # two outputs sharing keys: counted in output tensors
    p2 = plan([ma, mb], output(out, ws_entries(ma, mb, 0.5)),
              output(tmp_path / "two.safetensors", ws_entries(ma, mb, 0.25, out_dtype="F32")))
    seen.update(keys=0, bytes=0)
    execute(p2, threads=2, progress=progress)
    assert seen == {"keys": 2 * len(a), "bytes": p2.outputs[0].data_bytes + p2.outputs[1].data_bytes}


def test_wrong_result_shape_names_key_and_recipe_line(tmp_path):
    def flat(a: Same) -> Same:
        return a.reshape(-1)

    reg = registry_with(flat)
    a, b, (ma, mb) = two_models(tmp_path, dtype=torch.float32)
    span = Span("recipe.mecha", 3, 8, 3, 20)
    op = Op("flat", (ma.read("w"),), (), span)
    out = tmp_path / "out.safetensors"
    with pytest.raises(RuntimeFailure) as e:
        execute(plan([ma, mb], output(out, [("w", op, "F32", (64, 48))])), registry=reg)
    assert e.value.key == "w" and e.value.origin == span
    assert "[3072]" in e.value.message and "[64, 48]" in e.value.message
    assert not out.exists() and temp_leftovers(tmp_path) == []


def test_failing_method_points_at_recipe_line(tmp_path):
    def broken(a: Same) -> Same:
        raise ValueError("bad things")

    reg = registry_with(broken)
    a, b, (ma, mb) = two_models(tmp_path, dtype=torch.float32)
    span = Span("r.mecha", 7, 1, 7, 10)
    out = tmp_path / "out.safetensors"
    with pytest.raises(RuntimeFailure) as e:
        execute(plan([ma, mb], output(out, [("w", Op("broken", (ma.read("w"),), (), span),
                                              "F32", (64, 48))])), registry=reg, threads=2)
    assert e.value.origin == span and e.value.key == "w"
    assert "`broken` failed for key 'w': ValueError: bad things" == e.value.message
    assert not out.exists() and temp_leftovers(tmp_path) == []


def test_unknown_method_fails_before_any_file_is_created(tmp_path):
    a, b, (ma, mb) = two_models(tmp_path, dtype=torch.float32)
    out = tmp_path / "out.safetensors"
    with pytest.raises(RuntimeFailure, match="unknown merge method `nope`"):
        execute(plan([ma, mb], output(out, [("w", Op("nope", (ma.read("w"),)), "F32", (64, 48))])),
                registry=registry_with())
    assert not out.exists() and temp_leftovers(tmp_path) == []


def test_torch_threads_restored(tmp_path):
    before = torch.get_num_threads()
    a, b, (ma, mb) = two_models(tmp_path)
    execute(plan([ma, mb], output(tmp_path / "o.safetensors", ws_entries(ma, mb, 0.5))), threads=2)
    assert torch.get_num_threads() == before


# ------------------------------------------------------------------------------------------------
# Property: streamed execution equals eager evaluation of the same expression


def _exprs(depth):
    leaf = st.sampled_from([0, 1, 2]).map(lambda i: ("read", i))
    if depth == 0:
        return leaf
    sub_ = _exprs(depth - 1)
    return st.one_of(
        leaf,
        st.tuples(st.sampled_from(["add", "sub"]), sub_, sub_),
        st.tuples(st.just("scale"), sub_, st.floats(-4, 4, allow_nan=False, width=32)),
    )


def _build(e, reads):
    if e[0] == "read":
        return reads[e[1]]
    if e[0] == "scale":
        return scale(_build(e[1], reads), float(e[2]))
    return Op(e[0], (_build(e[1], reads), _build(e[2], reads)))


def _eager(e, tensors):
    if e[0] == "read":
        return tensors[e[1]].float()
    if e[0] == "scale":
        return _eager(e[1], tensors) * float(e[2])
    x, y = _eager(e[1], tensors), _eager(e[2], tensors)
    return x + y if e[0] == "add" else x - y


@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(exprs=st.lists(_exprs(3), min_size=1, max_size=3),
       shape=st.sampled_from([(5,), (3, 4), (), (0,), (2, 1, 3)]),
       dtype=st.sampled_from(["F16", "BF16", "F32"]), threads=st.sampled_from([1, 3]))
def test_streamed_equals_eager(tmp_path_factory, exprs, shape, dtype, threads):
    tmp = tmp_path_factory.mktemp("prop")
    g = torch.Generator().manual_seed(len(exprs))
    tensors = [torch.randn(shape, generator=g).to({"F16": torch.float16, "BF16": torch.bfloat16,
                                                    "F32": torch.float32}[dtype]) for _ in range(3)]
    ms = models(*(save(tmp / f"m{i}.safetensors", {"k": t}) for i, t in enumerate(tensors)))
    reads = [m.read("k") for m in ms]
    outs = [output(tmp / f"o{i}.safetensors", [("k", _build(e, reads), dtype, shape)])
            for i, e in enumerate(exprs)]
    execute(plan(ms, *outs), threads=threads)
    for i, e in enumerate(exprs):
        got = load_file(str(tmp / f"o{i}.safetensors"))["k"]
        ref = _eager(e, tensors).to(tensors[0].dtype)
        assert torch.equal(got.reshape(-1).view(torch.uint8), ref.reshape(-1).view(torch.uint8))


def test_unavailable_devices_are_clear_failures(tmp_path):
    a, b, (ma, mb) = two_models(tmp_path)
    out = tmp_path / "o.safetensors"
    p = plan([ma, mb], output(out, ws_entries(ma, mb, 0.5)))
    with pytest.raises(RuntimeFailure, match="unknown device 'gpu0'"):
        execute(p, device="gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeFailure, match="cannot compute on cuda"):
            execute(p, device="cuda")
    assert not out.exists() and temp_leftovers(tmp_path) == []


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu(tmp_path):
    a, b, (ma, mb) = two_models(tmp_path, big=True)
    outs = []
    for device in ("cpu", "cuda"):
        out = tmp_path / f"{device}.safetensors"
        execute(plan([ma, mb], output(out, ws_entries(ma, mb, 0.3))), device=device, threads=2)
        outs.append(load_file(str(out)))
    for k in outs[0]:
        assert outs[1][k].dtype == outs[0][k].dtype
        torch.testing.assert_close(outs[1][k], outs[0][k], rtol=0, atol=0)
