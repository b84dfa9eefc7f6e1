"""Property: streamed execution (check → lower → key-by-key backend) equals eager evaluation of
the same recipe on whole state dicts, for random recipes over small models."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file

from mechalang import pipeline
from mechalang.runtime.executor import execute

SHAPES = {"layers.0.weight": (6, 4), "layers.0.bias": (6,), "layers.1.weight": (3, 6, 2, 2),
          "head.weight": (5,)}


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("tiny")
    for i, name in enumerate("abc"):
        g = torch.Generator().manual_seed(100 + i)
        sd = {k: torch.randn(s, generator=g).to(torch.float16 if k != "head.weight" else torch.float32)
              for k, s in SHAPES.items()}
        sd["position_ids"] = torch.arange(7, dtype=torch.int64).unsqueeze(0) + i  # never merged
        save_file(sd, str(d / f"{name}.safetensors"))
    return d


ALPHAS = st.sampled_from([0.0, 0.25, 0.5, 0.8, 1.0])


def exprs(depth: int):
    leaf = st.sampled_from(["a", "b", "c"]).map(lambda n: ("leaf", n))
    if depth == 0:
        return leaf
    sub = exprs(depth - 1)
    return st.one_of(
        leaf,
        st.tuples(st.just("ws"), sub, sub, ALPHAS),
        st.tuples(st.just("ad"), sub, sub, sub, ALPHAS),
        st.tuples(st.just("ta"), sub, sub, sub, ALPHAS),
        st.tuples(st.just("avg"), st.lists(sub, min_size=1, max_size=3)),
    )


def to_text(e) -> str:
    kind = e[0]
    if kind == "leaf":
        return e[1]
    if kind == "ws":
        return f"weighted_sum({to_text(e[1])}, {to_text(e[2])}, alpha={e[3]})"
    if kind == "ad":
        return f"add_difference({to_text(e[1])}, {to_text(e[2])}, {to_text(e[3])}, alpha={e[4]})"
    if kind == "ta":
        return f"({to_text(e[1])} + {e[4]} * ({to_text(e[2])} - {to_text(e[3])}))"
    return f"n_average({', '.join(to_text(x) for x in e[1])})"


def eager(e, sds: dict[str, dict[str, torch.Tensor]], key: str) -> torch.Tensor:
    kind = e[0]
    if kind == "leaf":
        return sds[e[1]][key].to(torch.float32)
    if kind == "ws":
        x, y = eager(e[1], sds, key), eager(e[2], sds, key)
        return (1 - e[3]) * x + e[3] * y
    if kind == "ad":
        return eager(e[1], sds, key) + e[4] * (eager(e[2], sds, key) - eager(e[3], sds, key))
    if kind == "ta":
        return eager(e[1], sds, key) + e[4] * (eager(e[2], sds, key) - eager(e[3], sds, key))
    return torch.stack([eager(x, sds, key) for x in e[1]]).mean(dim=0)


def first_leaf(e) -> str:
    while e[0] != "leaf":
        e = e[1] if e[0] != "avg" else e[1][0]
    return e[1]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(expr=exprs(3), threads=st.sampled_from([1, 3]))
def test_streamed_equals_eager(tiny_models, tmp_path_factory, expr, threads):
    out_dir = tmp_path_factory.mktemp("out")
    lets = "\n".join(f'let {n} = model("{tiny_models / (n + ".safetensors")}")' for n in "abc")
    text = f'{lets}\nexport {to_text(expr)} to "{out_dir / "o.safetensors"}"\n'
    (out_dir / "r.mecha").write_text(text)
    c = pipeline.plan(pipeline.load(out_dir / "r.mecha"))
    assert c.ok, [d.message for d in c.diagnostics]
    execute(c.lowered.plan, threads=threads)
    out = load_file(str(out_dir / "o.safetensors"))
    sds = {n: load_file(str(tiny_models / f"{n}.safetensors")) for n in "abc"}
    first = sds[first_leaf(expr)]
    assert set(out) == set(SHAPES) | {"position_ids"}
    assert torch.equal(out["position_ids"], first["position_ids"])
    for key in SHAPES:
        expected = eager(expr, sds, key).to(first[key].dtype)
        assert out[key].dtype == first[key].dtype
        torch.testing.assert_close(out[key].to(torch.float32), expected.to(torch.float32), rtol=1e-3, atol=1e-3)
