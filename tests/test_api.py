"""The Python API: recipes built from Python, checked when built, printed as `.mecha` text that
round-trips, and merged with outputs equal to an independent computation."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file

import mechalang as mecha
from mechalang import pipeline
from mechalang.graph.nodes import structure

K = "model.diffusion_model.input_blocks.1.0.in_layers.2.weight"  # block IN01
K_OUT = "model.diffusion_model.output_blocks.2.0.in_layers.2.weight"  # block OUT02


@pytest.fixture
def here(small_models, monkeypatch, tmp_path):
    """Work in a fresh folder where `a`, `b`, `c` (sd1) and `xl` (sdxl) are found by name."""
    for n in ("a", "b", "c", "xl"):
        (tmp_path / f"{n}.safetensors").symlink_to(small_models / f"{n}.safetensors")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def tensors(name: str) -> dict[str, torch.Tensor]:
    return load_file(f"{name}.safetensors")


def test_dir_lists_the_api_and_every_method():
    names = dir(mecha)
    for n in ("model", "merge", "blocks", "preset", "param", "load", "mbw", "Recipe", "MechaError",
              "weighted_sum", "add_difference", "ties", "slerp", "merge_method"):
        assert n in names
    assert mecha.weighted_sum.__doc__.startswith("weighted_sum(a: same, b: same")
    with pytest.raises(AttributeError):
        mecha.no_such_method  # noqa: B018


def test_recipes_build_print_and_know_their_type(here):
    a, b = mecha.model("a.safetensors"), mecha.model("b.safetensors")
    r = mecha.weighted_sum(a, b, alpha=0.3)
    assert r.type == "Model[sd1]" and r.arch == "sd1" and r.is_model
    assert (b - a).type == "Delta[sd1]"
    assert mecha.blocks("sd1", IN00=0.3, default=0.5).type == "Hyper"
    assert str(r) == ('let a = model("a.safetensors")\nlet b = model("b.safetensors")\n'
                      'export weighted_sum(a, b, alpha=0.3) to "merged.safetensors"\n')
    assert r.to_mecha("x.safetensors", dtype="fp16").endswith('to "x.safetensors" as fp16\n')
    assert repr(a + 0.5 * (b - a)) == "<Recipe Model[sd1]: a + 0.5 * (b - a)>"
    assert len(r.keys()) == 1831
    delta = b - a
    assert str(delta).endswith("let result = b - a\n")  # not a model: bound, not exported
    with pytest.raises(AttributeError):
        r._expr = None  # immutable


def test_mistakes_raise_one_error_listing_every_diagnostic(here):
    a, b, xl = (mecha.model(f"{n}.safetensors") for n in ("a", "b", "xl"))
    with pytest.raises(mecha.MechaError) as e:
        a + b
    assert [d.code for d in e.value.diagnostics] == ["E0231"]
    assert "did you mean `weighted_sum(a, b)`?" in str(e.value)
    with pytest.raises(mecha.MechaError) as e:
        mecha.weighted_sum(a, xl)
    assert "E0220" in str(e.value) and "<python>:" in str(e.value)
    with pytest.raises(mecha.MechaError) as e:
        mecha.ties(a - b, a, density=1.5, nonsense=1)
    # every problem of the call at once: a Model where a Delta goes, an unknown keyword
    assert sorted(d.code for d in e.value.diagnostics) == ["E0216", "E0218"]
    with pytest.raises(mecha.MechaError) as e:
        mecha.blocks("sd1", IN99=0.3)
    assert e.value.diagnostics[0].code == "E0311"
    with pytest.raises(mecha.MechaError) as e:
        mecha.blocks("sdxk", IN00=0.3)
    assert e.value.diagnostics[0].code == "E0225" and "did you mean `sdxl`?" in str(e.value)


def test_merge_equals_an_independent_computation(here):
    a, b, c = (mecha.model(f"{n}.safetensors") for n in "abc")
    w = mecha.blocks("sd1", {"IN00..IN05": 0.3, "OUT*": 0.7}, default=0.5)
    stats = mecha.merge(mecha.weighted_sum(a, b, alpha=w), "ws.safetensors", threads=2)
    assert Path(stats.outputs[0].path) == here / "ws.safetensors"
    ta, tb, tc = tensors("a"), tensors("b"), tensors("c")
    out = tensors("ws")
    for key, alpha in ((K, 0.3), (K_OUT, 0.7), ("first_stage_model.decoder.conv_in.weight", 0.5)):
        expected = (1 - alpha) * ta[key].float() + alpha * tb[key].float()
        torch.testing.assert_close(out[key].float(), expected.to(ta[key].dtype).float(), rtol=0, atol=0)
    mecha.merge({"t.safetensors": a + 0.5 * (b - c), "ws2.safetensors": mecha.weighted_sum(a, b, 0.25)})
    t = tensors("t")
    expected = ta[K].float() + 0.5 * (tb[K].float() - tc[K].float())
    torch.testing.assert_close(t[K].float(), expected.to(ta[K].dtype).float(), rtol=0, atol=0)


def test_params_presets_and_mbw(here):
    a, b = mecha.model("a.safetensors"), mecha.model("b.safetensors")
    alpha = mecha.param("alpha", default=0.5)
    r = mecha.weighted_sum(a, b, alpha=alpha)
    assert "param alpha = 0.5\n" in str(r)
    mecha.merge(r, "p.safetensors", params={"alpha": 0.25})
    ta, tb = tensors("a"), tensors("b")
    torch.testing.assert_close(tensors("p")[K].float(),
                               (0.75 * ta[K].float() + 0.25 * tb[K].float()).to(ta[K].dtype).float())
    g = mecha.weighted_sum(a, b, alpha=mecha.preset("GRAD_V"))
    assert str(g).startswith('from "std/presets" import GRAD_V\n')
    m = mecha.mbw("sd1", [0.0] * 13 + [1.0] * 13)
    assert pipeline.load(text=str(mecha.weighted_sum(a, b, alpha=m))).ok
    over = mecha.preset("GRAD_V").override(IN00=0.0)
    assert "GRAD_V with {IN00: 0.0}" in str(mecha.weighted_sum(a, b, alpha=over))


def test_models_found_only_at_merge_time(here, tmp_path_factory):
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    for n in "ab":
        (elsewhere / f"x{n}.safetensors").symlink_to(here / f"{n}.safetensors")
    r = mecha.weighted_sum(mecha.model("xa.safetensors"), mecha.model("xb.safetensors"), alpha=0.5)
    assert r.type == "Model[?]"  # not found yet: checked at merge
    with pytest.raises(mecha.MechaError) as e:
        mecha.merge(r, "late.safetensors")
    assert e.value.diagnostics[0].code == "E0201"
    mecha.merge(r, "late.safetensors", models_dir=elsewhere)
    assert (here / "late.safetensors").exists()


def test_load_a_recipe_file_with_params(here):
    (here / "wsum.mecha").write_text(
        'param alpha: float = 0.5\nlet a = model("a.safetensors")\nlet b = model("b.safetensors")\n'
        'export weighted_sum(a, b, alpha=alpha) to "unused.safetensors"\n')
    r = mecha.load("wsum.mecha", alpha=0.2)
    assert r.type == "Model[sd1]" and "recipe(" in str(r) and "alpha=0.2" in str(r)
    mecha.merge(r + 0.5 * (mecha.model("c.safetensors") - mecha.model("a.safetensors")), "l.safetensors")
    ta, tb, tc = tensors("a"), tensors("b"), tensors("c")
    ws = 0.8 * ta[K].double() + 0.2 * tb[K].double()  # intermediates stay in fp32, never rounded to fp16
    expected = (ws + 0.5 * (tc[K].double() - ta[K].double())).to(ta[K].dtype)
    torch.testing.assert_close(tensors("l")[K], expected, rtol=0, atol=1e-3)
    assert not (here / "unused.safetensors").exists()
    with pytest.raises(mecha.MechaError) as e:
        mecha.load("wsum.mecha", alhpa=0.2)
    assert "has no param `alhpa`" in str(e.value) and "did you mean `alpha`?" in str(e.value)


def test_sd_mecha_readme_translates_line_for_line(here):
    # sd-mecha:                                              mechalang:
    model_a = mecha.model("a.safetensors")                  # sd_mecha.model("path/to/model_a.safetensors")
    model_b = mecha.model("b.safetensors")                  # sd_mecha.model("path/to/model_b.safetensors")
    recipe = mecha.weighted_sum(model_a, model_b, alpha=0.5)  # sd_mecha.weighted_sum(model_a, model_b, alpha=0.5)
    mecha.merge(recipe, output="model_out.safetensors")     # sd_mecha.merge(recipe, output="...")
    assert (here / "model_out.safetensors").exists()


def test_a_plugin_method_is_a_function(here, tmp_path):
    plugin = tmp_path / "p.py"
    plugin.write_text("from mechalang import merge_method, Same, Float\n"
                      "@merge_method(formula='a + alpha*(b-a)')\n"
                      "def api_pull(a: Same, b: Same, *, alpha: Float(0, 1) = 0.5) -> Same:\n"
                      "    return a + alpha * (b - a)\n")
    assert pipeline.load_plugins([plugin]) == []
    assert "api_pull" in dir(mecha)
    a, b = mecha.model("a.safetensors"), mecha.model("b.safetensors")
    assert mecha.api_pull(a, b, alpha=0.1).type == "Model[sd1]"


def test_importing_mechalang_imports_no_torch():
    code = ("import sys, mechalang as m\n"
            "m.model, m.weighted_sum\n"
            "print('torch' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.stdout.strip() == "False", r.stderr


# ------------------------------------------------------------------------------------------------
# Property: load(recipe.to_mecha()) gives the same recipe graph


def recipes():
    models = st.sampled_from(["a", "b", "c"]).map(lambda n: ("model", n))
    scalars = st.sampled_from([0.0, 0.25, 0.5, 1.0, 0.3333333333333333, 1e-3])
    hypers = st.one_of(scalars.map(lambda v: ("num", v)),
                       st.tuples(scalars, scalars).map(lambda t: ("blocks", t)),
                       st.just(("preset", "GRAD_V")), st.just(("param", "alpha")))

    def extend(children):
        return st.one_of(
            st.tuples(st.just("weighted_sum"), children, children, hypers),
            st.tuples(st.just("add_difference"), children, children, children, hypers),
            st.tuples(st.just("task"), children, children, children, scalars),
            st.tuples(st.just("fallback"), children, children),
        )

    return st.recursive(models, extend, max_leaves=6)


def build(t):
    kind = t[0]
    if kind == "model":
        return mecha.model(f"{t[1]}.safetensors")
    if kind == "weighted_sum":
        return mecha.weighted_sum(build(t[1]), build(t[2]), alpha=hyper(t[3]))
    if kind == "add_difference":
        return mecha.add_difference(build(t[1]), build(t[2]), build(t[3]), alpha=hyper(t[4]))
    if kind == "task":
        return build(t[1]) + t[4] * (build(t[2]) - build(t[3]))
    return build(t[1]) | build(t[2])


def hyper(h):
    if h[0] == "num":
        return h[1]
    if h[0] == "blocks":
        return mecha.blocks("sd1", {"IN00..IN05": h[1][0], "OUT*": h[1][1]}, default=0.5)
    if h[0] == "preset":
        return mecha.preset(h[1])
    return mecha.param(h[1], default=0.75)


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(tree=recipes())
def test_printed_recipes_load_to_the_same_graph(here, tree):
    recipe = build(tree)
    program = pipeline.load(text=recipe.to_mecha("rt.safetensors"))
    assert program.ok, [d.message for d in program.diagnostics]
    (export,) = program.exports
    assert structure(export.node) == structure(recipe.node)
