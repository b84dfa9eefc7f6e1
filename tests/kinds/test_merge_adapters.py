"""`mecha merge` with adapters: a model followed by LoRAs bakes them (`--lora S`), two LoRAs merge
into one LoRA by exact concatenation (`--alpha`), and every misuse is E0708 with exit code 2 and a
`help:` line saying what to type. Results are compared with numpy computations made here from the
LoRA files' own tensors."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file
from typer.testing import CliRunner

from mechalang.cli import app

from .conftest import Baked, assert_matches, close, mecha, write_adapter

# sd1 (dim_cap 8): kohya module -> checkpoint key, linear and convolution (3×3, 1×1) keys
MODULES = {
    "lora_unet_conv_in": "model.diffusion_model.input_blocks.0.0.weight",  # [8, 4, 3, 3]
    "lora_unet_down_blocks_0_resnets_0_conv1": "model.diffusion_model.input_blocks.1.0.in_layers.2.weight",
    "lora_unet_down_blocks_0_attentions_0_proj_in": "model.diffusion_model.input_blocks.1.1.proj_in.weight",
    "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q":
        "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight",
    "lora_te_text_model_encoder_layers_0_self_attn_q_proj":
        "cond_stage_model.transformer.text_model.encoder.layers.0.self_attn.q_proj.weight",
    "lora_unet_conv_out": "model.diffusion_model.out.2.weight",  # [4, 8, 3, 3]
}
L1 = {"lora_unet_conv_in": 3, "lora_unet_down_blocks_0_resnets_0_conv1": 3,
      "lora_unet_down_blocks_0_attentions_0_proj_in": 3,
      "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q": 3,
      "lora_te_text_model_encoder_layers_0_self_attn_q_proj": 3}
L2 = {"lora_unet_down_blocks_0_resnets_0_conv1": 2,
      "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q": 2, "lora_unet_conv_out": 2}
runner = CliRunner()


def f64(x) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)


def delta(t: dict, module: str, shape) -> np.ndarray:
    """(α/r)·U·D of one module of a kohya file, in float64 (α missing: r)."""
    up, down = f64(t[module + ".lora_up.weight"]), f64(t[module + ".lora_down.weight"])
    r = down.shape[0]
    alpha = float(t[module + ".alpha"].reshape(-1)[0]) if module + ".alpha" in t else r
    return (alpha / r) * (up.reshape(up.shape[0], -1) @ down.reshape(r, -1)).reshape(shape)


def deltas(t: dict, base: dict) -> dict[str, np.ndarray]:
    modules = {n.split(".")[0] for n in t}
    return {MODULES[m]: delta(t, m, base[MODULES[m]].shape) for m in modules}


def kohya(rng, base: dict, ranks: dict[str, int], alpha: float | None) -> dict:
    t = {}
    for module, r in ranks.items():
        shape = base[MODULES[module]].shape
        t[module + ".lora_up.weight"] = rng.standard_normal((shape[0], r) + ((1, 1) if len(shape) == 4 else ())
                                                            ).astype(np.float32) * 0.3
        t[module + ".lora_down.weight"] = rng.standard_normal((r,) + shape[1:]).astype(np.float32) * 0.3
        if alpha is not None:
            t[module + ".alpha"] = np.array(alpha, dtype=np.float32)
    return t


@pytest.fixture
def folder(tmp_path, bases, monkeypatch):
    """tmp_path with base.safetensors (sd1), l1 (rank 3, α 2) and l2 (rank 2, no α); the working folder."""
    shutil.copy(bases.path("sd1"), tmp_path / "base.safetensors")
    rng = np.random.default_rng(0)
    write_adapter(tmp_path / "l1.safetensors", kohya(rng, bases.tensors("sd1"), L1, 2.0))
    write_adapter(tmp_path / "l2.safetensors", kohya(rng, bases.tensors("sd1"), L2, None))
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MECHA_MODELS_DIR", raising=False)
    return tmp_path


def merge(folder: Path, *args: str):
    """`mecha merge ARGS --models-dir FOLDER`, in-process through the real command line."""
    return runner.invoke(app, ["merge", *args, "--models-dir", str(folder)])


# ------------------------------------------------------------------------------------------------
# baking


def test_bake_one_lora(folder, bases):
    """`mecha merge base l1 --lora 0.8`: base + 0.8·Δl1 on the linear and conv keys l1 names; every
    other key is the base's, bit for bit."""
    res = merge(folder, "base.safetensors", "l1.safetensors", "--lora", "0.8")
    assert res.exit_code == 0, res.output
    assert "wrote base+l1-lora-0.8.safetensors" in res.stdout
    out = load_file(str(folder / "base+l1-lora-0.8.safetensors"))
    base = bases.tensors("sd1")
    d1 = deltas(load_file(str(folder / "l1.safetensors")), base)
    assert len(d1) == len(L1)
    assert_matches(Baked(True, [], out, base), {k: f64(base[k]) + 0.8 * d for k, d in d1.items()})


def test_bake_two_loras(folder, bases):
    """`mecha merge base l1 l2 --lora 0.5`: base + 0.5·Δl1 + 0.5·Δl2 (a key in both gets both)."""
    res = merge(folder, "base.safetensors", "l1.safetensors", "l2.safetensors", "--lora", "0.5")
    assert res.exit_code == 0, res.output
    out = load_file(str(folder / "base+l1+l2-lora-0.5.safetensors"))
    base = bases.tensors("sd1")
    d1 = deltas(load_file(str(folder / "l1.safetensors")), base)
    d2 = deltas(load_file(str(folder / "l2.safetensors")), base)
    expected = {k: f64(base[k]) + 0.5 * d1.get(k, 0) + 0.5 * d2.get(k, 0) for k in set(d1) | set(d2)}
    assert_matches(Baked(True, [], out, base), expected)


# ------------------------------------------------------------------------------------------------
# LoRA + LoRA: one LoRA, by concatenation


def test_two_loras_merge_into_one(folder, bases):
    """`mecha merge l1 l2 --alpha 0.3`: a LoRA whose delta is 0.7·Δl1 + 0.3·Δl2 on every module;
    ranks add where both have the module (never an average of factors), downs stacked bit for bit."""
    res = merge(folder, "l1.safetensors", "l2.safetensors", "--alpha", "0.3")
    assert res.exit_code == 0, res.output
    out = load_file(str(folder / "l1+l2-lora-0.3.safetensors"))
    base = bases.tensors("sd1")
    t1, t2 = load_file(str(folder / "l1.safetensors")), load_file(str(folder / "l2.safetensors"))
    d1, d2 = deltas(t1, base), deltas(t2, base)
    modules = set(L1) | set(L2)
    assert set(out) == {m + s for m in modules for s in (".lora_up.weight", ".lora_down.weight", ".alpha")}
    for m in modules:
        key = MODULES[m]
        got = delta(out, m, base[key].shape)
        close(got, 0.7 * d1.get(key, 0) + 0.3 * d2.get(key, 0), tol=1e-5, what=m)
        rank = L1.get(m, 0) + L2.get(m, 0)
        downs = [t[m + ".lora_down.weight"] for t, ranks in ((t1, L1), (t2, L2)) if m in ranks]
        assert out[m + ".lora_down.weight"].shape[0] == rank and float(out[m + ".alpha"].reshape(-1)[0]) == rank
        np.testing.assert_array_equal(out[m + ".lora_down.weight"], np.concatenate(downs))


def test_print_recipe(folder):
    """--print-recipe prints the recipe (and writes nothing): the bake as `lora("…", base=…)`, the
    LoRA merge as a weighted sum exported `as lora(...)`; both canonical (fmt leaves them)."""
    from mechalang.syntax.fmt import format_text

    shutil.copy(folder / "l1.safetensors", folder / "my lora-v2.safetensors")
    res = merge(folder, "base.safetensors", "l1.safetensors", "my lora-v2.safetensors", "--lora", "0.8",
                "--print-recipe")
    assert res.exit_code == 0, res.output
    text = res.stdout
    assert 'lora("l1.safetensors", base=base)' in text
    assert 'lora("my lora-v2.safetensors", base=base)' in text
    assert "base + 0.8 * l1 + 0.8 * my_lora_v2" in text
    assert format_text(text) == (text, [])
    res = merge(folder, "l1.safetensors", "l2.safetensors", "--alpha", "0.3", "--dtype", "fp16", "--print-recipe")
    assert res.exit_code == 0, res.output
    flat = "".join(res.stdout.split())  # the printer may break a long export line
    assert "0.7 * l1 + 0.3 * l2" in res.stdout and 'aslora(dtype="fp16"' in flat
    assert format_text(res.stdout) == (res.stdout, [])
    assert sorted(p.name for p in folder.iterdir()) == ["base.safetensors", "l1.safetensors", "l2.safetensors",
                                                        "my lora-v2.safetensors"]


def test_a_lora_named_lora(folder):
    shutil.copy(folder / "l1.safetensors", folder / "lora.safetensors")
    res = merge(folder, "base.safetensors", "lora.safetensors", "l2.safetensors", "--print-recipe")
    assert res.exit_code == 0, res.output
    res = merge(folder, "base.safetensors", "lora.safetensors", "l2.safetensors")
    assert res.exit_code == 0, res.output


# ------------------------------------------------------------------------------------------------
# misuse: E0708, exit 2, a help line with what to type


MISUSE = {
    "lora_first": (["l1.safetensors", "base.safetensors"], "mecha merge MODEL.safetensors l1.safetensors"),
    "lora_into_sigmoid": (["base.safetensors", "l1.safetensors", "--method", "sigmoid"],
                          "mecha merge MODEL.safetensors l1.safetensors --lora"),
    "lora_into_add_difference": (["base.safetensors", "l1.safetensors", "l2.safetensors", "--method",
                                  "add_difference"], "mecha merge MODEL.safetensors l1.safetensors l2.safetensors"),
    "lora_flag_without_loras": (["base.safetensors", "base.safetensors", "--lora", "0.5"],
                                "mecha merge BASE.safetensors LORA.safetensors --lora"),
    "two_loras_sigmoid": (["l1.safetensors", "l2.safetensors", "--method", "sigmoid"], "recipe"),
    "three_loras": (["l1.safetensors", "l2.safetensors", "l1.safetensors"], "recipe"),
}


@pytest.mark.parametrize("case", list(MISUSE))
def test_misuse(folder, case):
    args, help_text = MISUSE[case]
    res = merge(folder, *args)
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output
    assert res.exception is None or isinstance(res.exception, SystemExit), res.exception
    lines = res.stderr.splitlines()
    assert any(ln.startswith("error[E0708]") for ln in lines), res.stderr
    helps = [ln for ln in lines if ln.strip().startswith("= help:")]
    assert helps and help_text in helps[0], res.stderr
    assert sorted(p.name for p in folder.iterdir()) == ["base.safetensors", "l1.safetensors", "l2.safetensors"]


def test_misuse_exit_code_of_the_real_command(folder):
    res = mecha("merge", "l1.safetensors", "base.safetensors", "--models-dir", str(folder), cwd=folder)
    assert res.rc == 2, res.text
    assert "Traceback" not in res.text and "error[E0708]" in res.stderr and "help:" in res.stderr
