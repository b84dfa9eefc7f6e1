"""Adapters whose modules are row slices of one checkpoint tensor: diffusers/AI-toolkit Flux LoRAs
(`to_q`/`to_k`/`to_v` onto `qkv`, and with `proj_mlp` onto `linear1`) and kohya SDXL LoRAs of
CLIP-G (`q_proj`/`k_proj`/`v_proj` onto `in_proj_weight`). Small hand-made checkpoints with the
real key names and consistent shapes (hidden h, MLP width m); each baked key is compared with an
independent numpy computation."""

from __future__ import annotations

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from mechalang import pipeline

H, M, R = 8, 16, 2
RNG = np.random.default_rng(7)


def rnd(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


def bake(tmp_path, base_tensors, arch, adapter, strength=0.7):
    save_file(base_tensors, str(tmp_path / "base.safetensors"))
    save_file(adapter, str(tmp_path / "a.safetensors"))
    (tmp_path / "r.mecha").write_text(
        f'let base = model("base.safetensors", arch={arch})\n'
        f'export base + {strength} * lora("a.safetensors", base=base) to "out.safetensors"\n')
    program = pipeline.load(tmp_path / "r.mecha")
    result = pipeline.run(program)
    assert result.ok, result.diagnostics
    return load_file(str(tmp_path / "out.safetensors")), program


def lora_pair(prefix, out, inn, *, peft=True):
    up, down = rnd(out, R), rnd(R, inn)
    if peft:
        return {prefix + ".lora_B.weight": up, prefix + ".lora_A.weight": down}, up @ down
    return {prefix + ".lora_up.weight": up, prefix + ".lora_down.weight": down, prefix + ".alpha": np.full((), R, np.float32)}, up @ down


def test_flux_diffusers_lora_fills_fused_rows(tmp_path):
    d = "model.diffusion_model."
    base = {
        d + "double_blocks.0.img_attn.qkv.weight": rnd(3 * H, H),
        d + "double_blocks.0.txt_attn.qkv.weight": rnd(3 * H, H),
        d + "double_blocks.0.img_attn.proj.weight": rnd(H, H),
        d + "single_blocks.0.linear1.weight": rnd(3 * H + M, H),
        d + "single_blocks.0.linear2.weight": rnd(H, H + M),
    }
    adapter, deltas = {}, {}
    t = "transformer."
    for name, key, rows in [
        ("transformer_blocks.0.attn.to_q", "double_blocks.0.img_attn.qkv.weight", (0, H)),
        ("transformer_blocks.0.attn.to_v", "double_blocks.0.img_attn.qkv.weight", (2 * H, 3 * H)),
        ("transformer_blocks.0.attn.add_k_proj", "double_blocks.0.txt_attn.qkv.weight", (H, 2 * H)),
        ("transformer_blocks.0.attn.to_out.0", "double_blocks.0.img_attn.proj.weight", None),
        ("single_transformer_blocks.0.attn.to_k", "single_blocks.0.linear1.weight", (H, 2 * H)),
        ("single_transformer_blocks.0.proj_mlp", "single_blocks.0.linear1.weight", (3 * H, 3 * H + M)),
        ("single_transformer_blocks.0.proj_out", "single_blocks.0.linear2.weight", None),
    ]:
        full = base[d + key].shape
        out = full[0] if rows is None else rows[1] - rows[0]
        tensors, delta = lora_pair(t + name, out, full[1])
        adapter.update(tensors)
        deltas.setdefault(key, np.zeros(full, np.float64))
        if rows is None:
            deltas[key] += delta
        else:
            deltas[key][rows[0]:rows[1]] += delta
    out, program = bake(tmp_path, base, "flux", adapter)
    assert any(d.code == "W0275" for d in program.diagnostics)  # diffusers files carry no alpha: scale 1
    for k, v in base.items():
        want = v.astype(np.float64) + 0.7 * deltas.get(k[len(d):], 0)
        np.testing.assert_allclose(out[k], want, rtol=1e-5, atol=1e-5 * np.abs(want).max())


def test_sdxl_kohya_clip_g_lora_fills_in_proj_rows(tmp_path):
    g = "conditioner.embedders.1.model.transformer.resblocks.0."
    base = {g + "attn.in_proj_weight": rnd(3 * H, H), g + "attn.out_proj.weight": rnd(H, H),
            g + "mlp.c_fc.weight": rnd(M, H)}
    te2 = "lora_te2_text_model_encoder_layers_0_"
    adapter, deltas = {}, {k: np.zeros(v.shape, np.float64) for k, v in base.items()}
    for name, key, rows in [("self_attn_q_proj", "attn.in_proj_weight", (0, H)),
                            ("self_attn_k_proj", "attn.in_proj_weight", (H, 2 * H)),
                            ("self_attn_v_proj", "attn.in_proj_weight", (2 * H, 3 * H)),
                            ("self_attn_out_proj", "attn.out_proj.weight", None),
                            ("mlp_fc1", "mlp.c_fc.weight", None)]:
        full = base[g + key].shape
        n = full[0] if rows is None else rows[1] - rows[0]
        tensors, delta = lora_pair(te2 + name, n, full[1], peft=False)
        adapter.update(tensors)
        target = deltas[g + key] if rows is None else deltas[g + key][rows[0]:rows[1]]
        target += delta
    out, _ = bake(tmp_path, base, "sdxl", adapter, strength=1.0)
    for k, v in base.items():
        want = v.astype(np.float64) + deltas[k]
        np.testing.assert_allclose(out[k], want, rtol=1e-5, atol=1e-5 * np.abs(want).max())


def test_overlapping_row_pieces_are_refused(tmp_path):
    """Two modules that claim the same rows of one fused key (a malformed file): an error naming
    the key, nothing written."""
    d = "model.diffusion_model."
    base = {d + "double_blocks.0.img_attn.qkv.weight": rnd(3 * H, H)}
    a, _ = lora_pair("transformer.transformer_blocks.0.attn.to_q", H, H)
    b, _ = lora_pair("lora_unet_double_blocks_0_img_attn_qkv", 3 * H, H, peft=False)
    save_file(base, str(tmp_path / "base.safetensors"))
    save_file({**a, **b}, str(tmp_path / "a.safetensors"))
    (tmp_path / "r.mecha").write_text('let base = model("base.safetensors", arch=flux)\n'
                                      'export base + lora("a.safetensors", base=base) to "out.safetensors"\n')
    checked = pipeline.check(pipeline.load(tmp_path / "r.mecha"))
    assert not checked.ok
    assert any("double_blocks.0.img_attn.qkv.weight" in d.message and d.code == "E0271" for d in checked.diagnostics)
    assert not (tmp_path / "out.safetensors").exists()


@pytest.mark.parametrize("dialect", ["kohya", "peft"])
def test_export_of_a_fused_delta_round_trips(tmp_path, dialect):
    """A Flux delta exported as a LoRA and baked back gives the delta's best low-rank form: at a
    rank ≥ the delta's, the delta itself."""
    d = "model.diffusion_model."
    base = {d + "single_blocks.0.linear1.weight": rnd(3 * H + M, H)}
    adapter, _ = lora_pair("transformer.single_transformer_blocks.0.proj_mlp", M, H)
    save_file(base, str(tmp_path / "base.safetensors"))
    save_file(adapter, str(tmp_path / "a.safetensors"))
    (tmp_path / "r.mecha").write_text(
        'let base = model("base.safetensors", arch=flux)\n'
        f'export lora("a.safetensors", base=base) to "x.safetensors" as lora(rank=4, dialect="{dialect}")\n'
        'export base + lora("a.safetensors", base=base) to "direct.safetensors"\n')
    assert pipeline.run(pipeline.load(tmp_path / "r.mecha")).ok
    (tmp_path / "back.mecha").write_text('let base = model("base.safetensors", arch=flux)\n'
                                         'export base + lora("x.safetensors", base=base) to "back.safetensors"\n')
    assert pipeline.run(pipeline.load(tmp_path / "back.mecha")).ok
    direct, back = load_file(str(tmp_path / "direct.safetensors")), load_file(str(tmp_path / "back.safetensors"))
    for k in direct:
        np.testing.assert_allclose(back[k], direct[k], rtol=1e-5, atol=1e-5 * np.abs(direct[k]).max())
