"""The diffusers pipeline layouts (stdlib/keymaps/*.toml `[diffusers]`, archs/diffusers_map.py),
checked against models made by the `diffusers` library and against diffusers' own single-file
converters (diffusers.loaders.single_file_utils), which go the other way: our mapping turns a
pipeline's state dicts into the single-file layout, diffusers' converter turns that back, and the
result must be the pipeline's tensors exactly."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

from mechalang.archs import diffusers_map as dm  # noqa: E402
from mechalang.archs import keymap  # noqa: E402
from mechalang.archs.registry import STDLIB_DIR, load_inventory  # noqa: E402

from . import diffusers_tiny  # noqa: E402


def inventory(arch: str) -> tuple[dict[str, bool], dict[str, str]]:
    specs, owner = load_inventory(STDLIB_DIR / f"{arch}.json")
    return {k: s.optional for k, s in specs.items()}, owner


def single_file(arch: str, state_dicts: dict[str, dict]) -> tuple[dict, dict]:
    """The single-file state dict our layout makes of per-folder state dicts (applied here with
    torch, independently of the source reader), and the folders' unused tensors."""
    inv, _ = inventory(arch)
    found, unused = dm.source_layout(arch, inv, {f: list(sd) for f, sd in state_dicts.items()})
    out = {}
    for key, p in found.items():
        parts = [state_dicts[p.folder][n] for n, _ in p.pieces]
        t = torch.cat(parts) if len(parts) > 1 else parts[0]
        if p.transform == "conv" and t.dim() == 2:
            t = t[:, :, None, None]
        elif p.transform == "transpose":
            t = t.T.contiguous()
        elif p.transform == "swap":
            a, b = t.chunk(2)
            t = torch.cat([b, a])
        out[key] = t
    return out, unused


def required_missing(arch: str, keys, components) -> list[str]:
    inv, owner = inventory(arch)
    return [k for k, opt in inv.items() if not opt and owner[k] in components and k not in keys]


def assert_same(got: dict, want: dict, where: str) -> None:
    assert set(got) == set(want), (where, sorted(set(got) ^ set(want))[:8])
    for k in want:
        assert torch.equal(got[k], want[k]), (where, k)


def strip_text_model(sd: dict) -> dict:
    """transformers 5 saves CLIPTextModel without the `text_model.` prefix that checkpoints have."""
    return {k if k.startswith("text_model.") or k.startswith("text_projection") else "text_model." + k: v
            for k, v in sd.items()}


# ------------------------------------------------------------------------------------------------


def test_sd1_every_key_placed_and_diffusers_converts_it_back():
    from diffusers.loaders.single_file_utils import (
        convert_ldm_clip_checkpoint,
        convert_ldm_unet_checkpoint,
        convert_ldm_vae_checkpoint,
    )

    pipe = diffusers_tiny.sd1_pipeline(1)
    sds = {"unet": pipe.unet.state_dict(), "vae": pipe.vae.state_dict(), "text_encoder": pipe.text_encoder.state_dict()}
    ckpt, unused = single_file("sd1", sds)
    assert unused == {}
    assert required_missing("sd1", ckpt, {"diffuser", "vae", "clip_l"}) == []
    assert_same(convert_ldm_unet_checkpoint(ckpt, dict(pipe.unet.config)), sds["unet"], "unet")
    assert_same(convert_ldm_vae_checkpoint(ckpt, dict(pipe.vae.config)), sds["vae"], "vae")
    assert_same(convert_ldm_clip_checkpoint(ckpt), strip_text_model(sds["text_encoder"]), "text_encoder")


def test_sd2_every_key_placed_and_diffusers_converts_it_back():
    """SD2's text encoder is saved by transformers 5 without `text_model.` (the optional prefix):
    read either way; the single file has every required key but the ones diffusers drops."""
    from diffusers.loaders.single_file_utils import (
        convert_ldm_unet_checkpoint,
        convert_ldm_vae_checkpoint,
        convert_open_clip_checkpoint,
    )

    pipe = diffusers_tiny.sd2_pipeline(1)
    sds = {"unet": pipe.unet.state_dict(), "vae": pipe.vae.state_dict(), "text_encoder": pipe.text_encoder.state_dict()}
    for te in (sds["text_encoder"], strip_text_model(sds["text_encoder"])):
        ckpt, unused = single_file("sd2", dict(sds, text_encoder=te))
        assert unused == {}
        assert required_missing("sd2", ckpt, {"diffuser", "vae", "clip_h"}) == []
        assert_same(convert_ldm_unet_checkpoint(ckpt, dict(pipe.unet.config)), sds["unet"], "unet")
        assert_same(convert_ldm_vae_checkpoint(ckpt, dict(pipe.vae.config)), sds["vae"], "vae")
        back = convert_open_clip_checkpoint(pipe.text_encoder, ckpt, prefix="cond_stage_model.model.")
        assert_same(strip_text_model(back), strip_text_model(sds["text_encoder"]), "text_encoder")


def test_sdxl_every_key_placed_and_diffusers_converts_it_back():
    from diffusers.loaders.single_file_utils import (
        convert_ldm_clip_checkpoint,
        convert_ldm_unet_checkpoint,
        convert_ldm_vae_checkpoint,
        convert_open_clip_checkpoint,
    )

    pipe = diffusers_tiny.sdxl_pipeline(2)
    sds = {"unet": pipe.unet.state_dict(), "vae": pipe.vae.state_dict(),
           "text_encoder": pipe.text_encoder.state_dict(), "text_encoder_2": pipe.text_encoder_2.state_dict()}
    ckpt, unused = single_file("sdxl", sds)
    assert unused == {}
    assert required_missing("sdxl", ckpt, {"diffuser", "vae", "clip_l", "clip_g"}) == []
    # the fused q/k/v of OpenCLIP-G: rows of in_proj_weight and in_proj_bias
    blk = "conditioner.embedders.1.model.transformer.resblocks.3.attn."
    layer = sds["text_encoder_2"]
    for end in ("weight", "bias"):
        want = torch.cat([layer[f"text_model.encoder.layers.3.self_attn.{p}_proj.{end}"] for p in "qkv"])
        assert torch.equal(ckpt[blk + f"in_proj_{end}"], want)
    assert torch.equal(ckpt["conditioner.embedders.1.model.text_projection"], layer["text_projection.weight"].T)
    assert_same(convert_ldm_unet_checkpoint(ckpt, dict(pipe.unet.config)), sds["unet"], "unet")
    assert_same(convert_ldm_vae_checkpoint(ckpt, dict(pipe.vae.config)), sds["vae"], "vae")
    te1 = convert_ldm_clip_checkpoint({k: v for k, v in ckpt.items() if k.startswith("conditioner.embedders.0.")})
    assert_same(te1, strip_text_model(sds["text_encoder"]), "text_encoder")
    te2 = convert_open_clip_checkpoint(pipe.text_encoder_2, ckpt, prefix="conditioner.embedders.1.model.")
    assert_same(te2, sds["text_encoder_2"], "text_encoder_2")


def _sd3_transformer(inv):
    from diffusers import SD3Transformer2DModel

    blocks = len({k.split(".")[3] for k in inv if "joint_blocks" in k})
    return SD3Transformer2DModel(sample_size=8, patch_size=2, in_channels=4, num_layers=blocks, attention_head_dim=4,
                                 num_attention_heads=2, joint_attention_dim=8, caption_projection_dim=8,
                                 pooled_projection_dim=8, out_channels=4, pos_embed_max_size=8)


def test_sd3_transformer_placed_and_converted_back():
    from diffusers.loaders.single_file_utils import convert_sd3_transformer_checkpoint_to_diffusers

    inv, _ = inventory("sd3")
    model = _sd3_transformer(inv)
    diffusers_tiny._randomize(model, 3)
    sd = model.state_dict()
    ckpt, unused = single_file("sd3", {"transformer": sd})
    assert unused == {}
    # every inventory key of the MMDiT, but the sampling table that no pipeline folder holds
    assert required_missing("sd3", ckpt, {"diffuser"}) == ["model.model_sampling.sigmas"]
    assert_same(convert_sd3_transformer_checkpoint_to_diffusers(dict(ckpt)), sd, "transformer")


def test_flux_transformer_placed_with_fused_rows_and_swapped_halves():
    from diffusers import FluxTransformer2DModel

    inv, _ = inventory("flux")
    nd = len({k.split(".")[3] for k in inv if "double_blocks" in k})
    ns = len({k.split(".")[3] for k in inv if "single_blocks" in k})
    model = FluxTransformer2DModel(patch_size=1, in_channels=4, num_layers=nd, num_single_layers=ns,
                                   attention_head_dim=4, num_attention_heads=2, joint_attention_dim=8,
                                   pooled_projection_dim=8, guidance_embeds=True, axes_dims_rope=(0, 2, 2))
    diffusers_tiny._randomize(model, 4)
    sd = model.state_dict()
    ckpt, unused = single_file("flux", {"transformer": sd})
    assert unused == {}
    assert required_missing("flux", ckpt, {"diffuser"}) == []
    # diffusers' own Flux converter splits linear1 at the full model's 3072 columns, so the tiny
    # model is checked against the same facts written out here.
    p = "model.diffusion_model."
    for end in ("weight", "bias"):
        want = torch.cat([sd[f"single_transformer_blocks.5.attn.to_{x}.{end}"] for x in "qkv"]
                         + [sd[f"single_transformer_blocks.5.proj_mlp.{end}"]])
        assert torch.equal(ckpt[p + f"single_blocks.5.linear1.{end}"], want)
        shift, scale = sd[f"norm_out.linear.{end}"].chunk(2)
        assert torch.equal(ckpt[p + f"final_layer.adaLN_modulation.1.{end}"], torch.cat([scale, shift]))
    assert torch.equal(ckpt[p + "double_blocks.2.txt_attn.norm.key_norm.scale"],
                       sd["transformer_blocks.2.attn.norm_added_k.weight"])


@pytest.mark.parametrize("arch", ["sd1", "sd2", "sdxl", "sd3", "flux"])
def test_output_layout_inverts_source_layout(arch):
    """Every inventory key placed for writing lands where reading takes it from (rows tile)."""
    specs, _ = load_inventory(STDLIB_DIR / f"{arch}.json")
    shapes = {k: s.shape for k, s in specs.items()}
    out = dm.output_layout(arch, shapes)
    for key, p in out.placements.items():
        assert dm.place(arch, key, shapes) == p
        if p.fused:
            rows = out.rows[key]
            assert rows[0][0] == 0 and rows[-1][1] == shapes[key][0]
    placed_folders = {p.folder for p in out.placements.values()}
    assert placed_folders == {c.folder for c in dm.layout(arch).components}


def test_pipeline_classes_name_their_architectures():
    classes = dm.pipeline_classes()
    assert classes["StableDiffusionPipeline"] == "sd1"
    assert dm.pipeline_candidates()["StableDiffusionPipeline"] == ("sd1", "sd2")  # configs tell them apart
    assert classes["StableDiffusionXLPipeline"] == "sdxl"
    assert classes["StableDiffusion3Pipeline"] == "sd3"
    assert classes["FluxPipeline"] == "flux"


def test_adapters_never_name_a_transformed_weight():
    """`as` rules are for whole pipelines: a LoRA on norm_out.linear (swapped halves) has no target."""
    specs, _ = load_inventory(STDLIB_DIR / "flux.json")
    names = keymap.module_names("flux", {k: s.shape for k, s in specs.items()})
    assert "transformer.norm_out.linear" not in names
    assert "transformer.single_transformer_blocks.0.attn.to_q" in names


def test_keymap_rejects_unknown_transform(tmp_path, monkeypatch):
    bad = tmp_path / "generic.toml"
    bad.write_text('[maps]\nm = [["a", "b", { as = "flip" }]]\n')
    with pytest.raises(keymap.KeymapError, match="`as` is one of"):
        keymap._read(bad, keymap._Keymap([], {}))
