"""Synthetic models: real key names, capped or true shapes, deterministic values."""

from __future__ import annotations

import torch
from safetensors import safe_open
from safetensors.torch import load_file

from mechalang.archs.header import read_header
from mechalang.archs.registry import get_arch
from mechalang.synth import main, make_model


def test_small_sd1_has_every_inventory_key_with_capped_shapes(tmp_path):
    p = tmp_path / "sd1.safetensors"
    keys = make_model("sd1", p, dim_cap=4, seed=1)
    inv = get_arch("sd1").inventory
    assert list(keys) == list(inv)  # optional keys included, inventory order
    sd = load_file(str(p))
    assert set(sd) == set(inv)
    for k, spec in inv.items():
        assert tuple(sd[k].shape) == tuple(min(d, 4) for d in spec.shape), k
    assert sd["model.diffusion_model.out.2.weight"].dtype == torch.float16
    ids = sd["cond_stage_model.transformer.text_model.embeddings.position_ids"]
    assert ids.dtype == torch.int64 and ids.tolist() == [[0, 1, 2, 3]]
    assert sd["model_ema.num_updates"].dtype == torch.int32
    # header agrees with safetensors' own reader, tensors in the order written
    h = read_header(str(p))
    assert list(h.tensors) == list(keys)
    assert h.metadata["format"] == "pt"


def test_values_are_deterministic_per_seed_and_key(tmp_path):
    a, b, c, d = (tmp_path / f"{n}.safetensors" for n in "abcd")
    make_model("sd3", a, dim_cap=3, seed=7)
    make_model("sd3", b, dim_cap=3, seed=7)
    make_model("sd3", c, dim_cap=3, seed=8)
    make_model("sd3", d, dim_cap=3, seed=7, drop=["text_encoders.*"])
    assert a.read_bytes() == b.read_bytes()
    sa, sc, sd_ = load_file(str(a)), load_file(str(c)), load_file(str(d))
    k = "model.diffusion_model.joint_blocks.0.x_block.attn.qkv.weight"
    assert not torch.equal(sa[k], sc[k])
    assert not any(x.startswith("text_encoders.") for x in sd_)
    for x in sd_:  # dropping keys leaves the others' values unchanged
        assert torch.equal(sa[x], sd_[x])


def test_dtype_scale_extra_and_keep(tmp_path):
    p = tmp_path / "m.safetensors"
    keys = make_model("flux", p, dim_cap=2, dtype="bfloat16", scale=0.0,
                      extra={"my.extra.weight": (3, 5)}, drop=["vae.*", "text_encoders.*"])
    sd = load_file(str(p))
    assert keys["my.extra.weight"] == ((3, 5), "BF16")
    assert sd["my.extra.weight"].shape == (3, 5) and sd["my.extra.weight"].dtype == torch.bfloat16
    assert all(float(t.abs().max()) == 0.0 for t in sd.values())
    q = tmp_path / "keep.safetensors"
    keys = make_model("sd1", q, dim_cap=2, dtype="keep", drop=["model_ema.*"])
    assert keys["model.diffusion_model.out.2.weight"][1] == "F32"


def test_full_shapes(tmp_path):
    # dim_cap=None writes the true shapes; keep it small by dropping the big tensors
    p = tmp_path / "full.safetensors"
    keys = make_model("sd1", p, dim_cap=None, dtype="float32",
                      drop=["model.*", "first_stage_model.*", "model_ema.*",
                            "cond_stage_model.*.encoder.*", "cond_stage_model.*_embedding.*"])
    sd = load_file(str(p))
    assert sd["alphas_cumprod"].shape == (1000,)
    ids = sd["cond_stage_model.transformer.text_model.embeddings.position_ids"]
    assert ids.tolist() == [list(range(77))]
    assert keys["cond_stage_model.transformer.text_model.final_layer_norm.weight"] == ((768,), "F32")


def test_without_optional_keys(tmp_path):
    keys = make_model("sd1", tmp_path / "m.safetensors", dim_cap=2, optional=False)
    assert set(keys) == get_arch("sd1").expected_keys()


def test_families(tmp_path):
    p = tmp_path / "llama.safetensors"
    keys = make_model("llama", p, layers=3, dim_cap=8)
    assert "model.layers.2.mlp.down_proj.weight" in keys and "model.layers.3.mlp.down_proj.weight" not in keys
    assert keys["model.layers.0.self_attn.k_proj.weight"] == ((4, 8), "F16")
    q = tmp_path / "bert.safetensors"
    keys = make_model("bert", q, layers=1)
    with safe_open(str(q), "pt") as f:
        assert f.get_tensor("embeddings.position_ids").dtype == torch.int64
        assert set(f.keys()) == set(keys)


def test_cli(tmp_path, capsys):
    p = tmp_path / "cli.safetensors"
    assert main(["sd3", str(p), "--seed", "3", "--dtype", "float32", "--dim-cap", "2"]) == 0
    assert "wrote" in capsys.readouterr().out
    assert read_header(str(p)).tensors["model.diffusion_model.pos_embed"].dtype == "F32"
    assert main(["nope", str(p)]) == 2
    assert "unknown architecture `nope`" in capsys.readouterr().err
