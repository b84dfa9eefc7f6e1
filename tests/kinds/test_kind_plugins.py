"""Model kinds as an extension API: `from mechalang.kinds import model_kind` in a plugin file given
with `--plugin` registers a kind that `lora(...)` then reads like a built-in (checked from its
tensors' shapes by its `shape=` function, computed by its delta function, listed by `mecha info
--kinds`). Plugin runs go through the command line as subprocesses, so this test process's
registry never holds a plugin's kinds."""

from __future__ import annotations

import shutil
import textwrap

import numpy as np
import pytest
from safetensors.numpy import load_file

from .conftest import Baked, assert_matches, mecha, write_adapter

PLUGIN = textwrap.dedent('''
    """Two kinds of a test plugin."""
    from mechalang.kinds import Inferred, model_kind


    def _scaled_diff_shape(parts, params):
        if len(parts["s"]) > 1:
            return Inferred(problem="sdiff_scale must hold one number")
        return Inferred(tuple(parts["d"]), None)


    @model_kind("scaled_diff", parts={"sdiff": "d", "sdiff_scale": "s"}, required=("d", "s"),
                formula="ΔW = s·d (a scaled full difference)", shape=_scaled_diff_shape)
    def scaled_diff(parts, ctx):
        """A full-weight difference d times a scalar s."""
        return parts["d"].reshape(ctx.shape) * parts["s"].reshape(-1)[0]


    @model_kind("rowscale", parts={"rowscale": "v"}, required=("v",), formula="ΔW = W ⊙ v (per output row)",
                needs_base=True, shape=lambda parts, params: Inferred(None, None, out=parts["v"][0]))
    def rowscale(parts, ctx):
        """Each output row of the base weight scaled by v."""
        return ctx.base * parts["v"].reshape((-1,) + (1,) * (ctx.base.dim() - 1))
''')

CONV3 = "lora_unet_down_blocks_0_resnets_0_conv1"  # -> [8, 8, 3, 3]
CONV3_KEY = "model.diffusion_model.input_blocks.1.0.in_layers.2.weight"
FC1 = "lora_te_text_model_encoder_layers_0_mlp_fc1"  # -> [8, 8]
FC1_KEY = "cond_stage_model.transformer.text_model.encoder.layers.0.mlp.fc1.weight"
TO_Q = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"
TO_Q_KEY = "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight"


def f64(x) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)


@pytest.fixture
def folder(tmp_path, bases):
    """tmp_path with the plugin (my_kinds.py), the sd1 base and adapters of the plugin's kinds."""
    (tmp_path / "my_kinds.py").write_text(PLUGIN)
    shutil.copy(bases.path("sd1"), tmp_path / "base.safetensors")
    rng = np.random.default_rng(0)
    write_adapter(tmp_path / "sd.safetensors", {
        CONV3 + ".sdiff": rng.standard_normal((8, 8, 3, 3)).astype(np.float32),
        CONV3 + ".sdiff_scale": np.array(0.5, np.float32),
        FC1 + ".sdiff": rng.standard_normal((8, 8)).astype(np.float32),
        FC1 + ".sdiff_scale": np.array([-2.0], np.float32)})
    write_adapter(tmp_path / "rs.safetensors", {TO_Q + ".rowscale": rng.standard_normal(8).astype(np.float32),
                                                CONV3 + ".rowscale": rng.standard_normal(8).astype(np.float32)})
    return tmp_path


def recipe(folder, body: str, name: str = "r.mecha") -> str:
    (folder / name).write_text('let base = model("base.safetensors")\n' + body)
    return name


def clean(res) -> None:
    assert "Traceback" not in res.text and "internal error" not in res.text, res.text


# ------------------------------------------------------------------------------------------------


def test_plugin_kind_checks_with_a_note(folder):
    r = recipe(folder, 'export base + lora("sd.safetensors", base=base) + 0.5 * lora("rs.safetensors", base=base)'
                       ' to "out.safetensors"\n')
    res = mecha("check", r, "--plugin", "my_kinds.py", cwd=folder)
    assert res.rc == 0, res.text
    notes = [ln for ln in res.text.splitlines() if ln.strip().startswith("note:")]
    assert any("`sd`" in n and "scaled_diff" in n and "2 modules" in n for n in notes), res.text
    assert any("`rs`" in n and "rowscale" in n for n in notes), res.text
    # without the plugin, nothing knows these tensors
    res = mecha("check", r, cwd=folder)
    assert res.rc == 1 and "error[E0274]" in res.stderr, res.text
    clean(res)


def test_plugin_kind_runs(folder, bases):
    """`mecha run --plugin`: base + s·d (the plugin's delta) + 0.5·W⊙v (a needs_base kind), against
    numpy; the plugin's delta exported `as lora(rank=8)` (full rank) rebuilds it."""
    r = recipe(folder, 'let sd = lora("sd.safetensors", base=base)\n'
                       'export base + sd + 0.5 * lora("rs.safetensors", base=base) to "out.safetensors"\n'
                       'export sd to "sd_lora.safetensors" as lora(rank=8)\n')
    res = mecha("run", r, "--plugin", "my_kinds.py", cwd=folder)
    assert res.rc == 0, res.text
    clean(res)
    sd, rs = load_file(str(folder / "sd.safetensors")), load_file(str(folder / "rs.safetensors"))
    base = bases.tensors("sd1")
    expected = {
        CONV3_KEY: f64(base[CONV3_KEY]) + 0.5 * f64(sd[CONV3 + ".sdiff"])
        + 0.5 * f64(base[CONV3_KEY]) * f64(rs[CONV3 + ".rowscale"])[:, None, None, None],
        FC1_KEY: f64(base[FC1_KEY]) - 2.0 * f64(sd[FC1 + ".sdiff"]),
        TO_Q_KEY: f64(base[TO_Q_KEY]) * (1 + 0.5 * f64(rs[TO_Q + ".rowscale"])[:, None]),
    }
    assert_matches(Baked(True, [], load_file(str(folder / "out.safetensors")), base), expected)
    lo = load_file(str(folder / "sd_lora.safetensors"))
    for module, want in ((CONV3, 0.5 * f64(sd[CONV3 + ".sdiff"])), (FC1, -2.0 * f64(sd[FC1 + ".sdiff"]))):
        up, down = f64(lo[module + ".lora_up.weight"]), f64(lo[module + ".lora_down.weight"])
        r_ = down.shape[0]
        got = float(lo[module + ".alpha"]) / r_ * (up.reshape(up.shape[0], -1) @ down.reshape(r_, -1))
        err = np.linalg.norm(got.reshape(want.shape) - want) / np.linalg.norm(want)
        assert err <= 1e-5, (module, err)


def test_plugin_shape_function_is_used_by_the_checker(folder):
    """The plugin's `shape=` runs at check time: its problem sentence, and a delta shape that does not
    fit the base, are errors naming the module; a needs_base kind without base= is E0272."""
    rng = np.random.default_rng(1)
    write_adapter(folder / "bad_scale.safetensors", {FC1 + ".sdiff": rng.standard_normal((8, 8)).astype(np.float32),
                                                     FC1 + ".sdiff_scale": np.ones((2, 2), np.float32)})
    write_adapter(folder / "bad_shape.safetensors", {FC1 + ".sdiff": rng.standard_normal((8, 5)).astype(np.float32),
                                                     FC1 + ".sdiff_scale": np.ones((), np.float32)})
    cases = [('lora("bad_scale.safetensors", base=base)', "E0271", "sdiff_scale must hold one number"),
             ('lora("bad_shape.safetensors", base=base)', "E0271", "[8, 5]"),
             ('lora("rs.safetensors")', "E0272", "rowscale")]
    r = recipe(folder, "".join(f'export base + {call} to "o{i}.safetensors"\n' for i, (call, _, _) in enumerate(cases)))
    res = mecha("check", r, "--plugin", "my_kinds.py", cwd=folder)
    assert res.rc == 1, res.text
    clean(res)
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("error[")]
    assert len(errors) == len(cases), res.text
    for call, code, said in cases:
        line = next((ln for ln in errors if ln.startswith(f"error[{code}]") and said in ln), "")
        assert line, (said, res.text)
        if code == "E0271":
            assert FC1 in line, line


def test_info_kinds_lists_the_plugin_kind(folder):
    res = mecha("info", "--kinds", "--plugin", "my_kinds.py", cwd=folder)
    assert res.rc == 0, res.text
    lines = res.stdout.splitlines()
    at = next(i for i, ln in enumerate(lines) if ln.startswith("scaled_diff"))
    assert "(from my_kinds.py)" in lines[at]
    assert lines[at + 1].strip() == "ΔW = s·d (a scaled full difference)"
    assert ".sdiff" in res.stdout and ".sdiff_scale" in res.stdout
    at = next(i for i, ln in enumerate(lines) if ln.startswith("rowscale"))
    assert "(from my_kinds.py)" in lines[at] and "needs base=" in "\n".join(lines[at:at + 5])
    assert any(ln.startswith("lora") and "from" not in ln for ln in lines)  # the built-ins are still there


def test_plugin_redefining_a_builtin_kind_is_a_clear_error(folder):
    (folder / "clash.py").write_text(textwrap.dedent('''
        from mechalang.kinds import model_kind


        @model_kind("lora", parts={"my_up": "up"}, required=("up",), formula="ΔW = up")
        def lora(parts, ctx):
            return parts["up"]
    '''))
    r = recipe(folder, 'export base + lora("sd.safetensors", base=base) to "o.safetensors"\n')
    for args in (("info", "--kinds", "--plugin", "clash.py"), ("check", r, "--plugin", "clash.py")):
        res = mecha(*args, cwd=folder)
        clean(res)
        assert res.rc == 1, res.text
        assert "error[E0702]" in res.stderr and "lora" in res.stderr and "already registered" in res.stderr


def test_plugin_registering_a_kind_twice_is_a_clear_error(folder):
    """Two plugins with the same kind: the second is E0702 (who registered it first is named)."""
    shutil.copy(folder / "my_kinds.py", folder / "again.py")
    res = mecha("info", "--kinds", "--plugin", "my_kinds.py", "--plugin", "again.py", cwd=folder)
    clean(res)
    assert res.rc == 1, res.text
    line = next((ln for ln in res.stderr.splitlines() if ln.startswith("error[E0702]")), "")
    assert "again.py" in line and "scaled_diff" in line and "my_kinds.py" in line, res.text


# ------------------------------------------------------------------------------------------------
# the API itself, and `mecha info --kinds` without plugins


def test_model_kind_api():
    """The decorator is public, the built-ins are registered through it, and it checks its arguments
    before registering anything."""
    from mechalang.kinds import KINDS, Inferred, KindContext, KindSpec, builtin, model_kind  # noqa: F401

    spec = KINDS.get("lora")
    assert isinstance(spec, KindSpec) and spec.source == "builtin" and spec.delta is builtin.lora
    before = KINDS.names()
    with pytest.raises(ValueError, match="required part"):
        model_kind("bad_kind_a", parts={"x": "a"}, required=("b",))
    with pytest.raises(ValueError, match="target"):
        model_kind("bad_kind_b", parts={"x": "a"}, required=("a",), target="nope")
    assert KINDS.names() == before


FORMULAS = {  # kind -> a piece of its formula as listed
    "lora": "ΔW = (α/r)·U·D",
    "loha": "(w1a·w1b) ⊙ (w2a·w2b)",
    "lokr": "kron(w1, w2)",
    "ia3": "ΔW = W ⊙ l",
    "diff": "ΔW = diff",
    "oft": "(I+Q)(I−Q)⁻¹",
}


def test_info_kinds_lists_every_kind_with_its_formula(tmp_path):
    from mechalang.kinds import KINDS

    res = mecha("info", "--kinds", cwd=tmp_path)
    assert res.rc == 0, res.text
    lines = res.stdout.splitlines()
    headers = {ln.split()[0]: i for i, ln in enumerate(lines) if ln and not ln[0].isspace() and ":" not in ln}
    builtin = [s.name for s in KINDS.all() if s.source == "builtin"]
    assert set(builtin) <= set(headers), set(builtin) - set(headers)
    for name in builtin:  # each with its formula on the next line
        assert lines[headers[name] + 1].strip() == KINDS.get(name).formula, name
    for name, piece in FORMULAS.items():
        assert piece in lines[headers[name] + 1], (name, lines[headers[name] + 1])
    assert "from" not in "".join(lines[headers[n]] for n in builtin)
