"""Build mechalang/stdlib/architectures/sd2.json, the key inventory of a Stable Diffusion 2.x
single-file checkpoint (LDM names), from the reference configurations rather than by hand.

    python tools/build_sd2_inventory.py            # rewrites sd2.json
    python tools/build_sd2_inventory.py --check    # exits 1 if sd2.json differs

Where each part comes from:

- **UNet** (`model.diffusion_model.*`): SD2 keeps SD1's LDM key names, so the names are sd1.json's.
  Their shapes come from diffusers' UNet2DConditionModel built on the `meta` device (no weights
  allocated) with the config that diffusers' own `create_unet_diffusers_config_from_ldm` derives
  from the `unet_config` of Stability AI's v2-inference-v.yaml (below); each LDM name is paired
  with its diffusers name by diffusers' own `convert_ldm_unet_checkpoint`, run on a checkpoint
  whose values are the key names, so the pairing is diffusers' and not ours.
- **Text encoder** (`cond_stage_model.model.*`): OpenCLIP ViT-H/14's text tower (width 1024, 16
  heads, 24 residual blocks, embedding dim 1024, 77 positions, 49408 tokens: the `ViT-H-14` model
  config that the yaml's FrozenOpenCLIPEmbedder names). The names and shapes are checked by running
  diffusers' `convert_open_clip_checkpoint` on meta tensors of exactly these names and shapes and
  comparing the result, key by key and shape by shape, with a transformers CLIPTextModel built on
  `meta` with SD2's diffusers text-encoder config (23 layers: the conversion drops the 24th block,
  which SD2 never uses as it takes the penultimate layer's output). The 24th block,
  `text_projection` and `logit_scale` are optional (absent from a model read from diffusers).
- **VAE, EMA and scheduler buffers**: the yaml's first_stage_config is SD1's, so the VAE group is
  sd1.json's; the EMA group is SD1's names (`model_ema.` + the UNet path without dots) with SD2's
  UNet shapes; the DDPM buffers are SD1's (1000 steps).
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

ARCH_DIR = Path(__file__).resolve().parent.parent / "mechalang" / "stdlib" / "architectures"
UNET = "model.diffusion_model."
TE = "cond_stage_model.model."

# The `model.params` of Stability AI's configs/stable-diffusion/v2-inference-v.yaml (768-v; the
# 512 base config differs only in image size and parameterization, neither of which is a key).
V2_LDM_CONFIG = {"model": {"params": {
    "unet_config": {"params": {
        "use_checkpoint": True, "use_fp16": True, "image_size": 32, "in_channels": 4, "out_channels": 4,
        "model_channels": 320, "attention_resolutions": [4, 2, 1], "num_res_blocks": 2,
        "channel_mult": [1, 2, 4, 4], "num_head_channels": 64, "use_spatial_transformer": True,
        "use_linear_in_transformer": True, "transformer_depth": 1, "context_dim": 1024, "legacy": False}},
    "first_stage_config": {"params": {"embed_dim": 4, "ddconfig": {
        "double_z": True, "z_channels": 4, "resolution": 256, "in_channels": 3, "out_ch": 3, "ch": 128,
        "ch_mult": [1, 2, 4, 4], "num_res_blocks": 2, "attn_resolutions": [], "dropout": 0.0}}},
    "cond_stage_config": {"params": {"freeze": True, "layer": "penultimate"}},
}}}

# OpenCLIP ViT-H-14 text tower.
WIDTH, HEADS, LAYERS, EMBED_DIM, CONTEXT, VOCAB, MLP = 1024, 16, 24, 1024, 77, 49408, 4096


def unet_shapes(sd1_unet: list[str]) -> dict[str, list[int]]:
    import torch
    from diffusers import UNet2DConditionModel
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint, create_unet_diffusers_config_from_ldm

    with warnings.catch_warnings():  # image_size= is deprecated; it only sets sample_size, not a key
        warnings.simplefilter("ignore", FutureWarning)
        config = create_unet_diffusers_config_from_ldm(V2_LDM_CONFIG, {}, image_size=768)
    assert config["use_linear_projection"] and config["cross_attention_dim"] == 1024, config
    with torch.device("meta"):
        unet = UNet2DConditionModel(**config)
    diffusers_shapes = {k: list(v.shape) for k, v in unet.state_dict().items()}
    pairing = convert_ldm_unet_checkpoint({k: k for k in sd1_unet}, config)  # diffusers name -> LDM name
    assert set(pairing) == set(diffusers_shapes), sorted(set(pairing) ^ set(diffusers_shapes))[:5]
    assert sorted(pairing.values()) == sorted(sd1_unet)
    return {ldm: diffusers_shapes[d] for d, ldm in pairing.items()}


def text_encoder_shapes() -> dict[str, tuple[list[int], bool]]:
    """OpenCLIP key -> (shape, optional)."""
    out: dict[str, tuple[list[int], bool]] = {
        "positional_embedding": ([CONTEXT, WIDTH], False),
        "token_embedding.weight": ([VOCAB, WIDTH], False),
        "ln_final.weight": ([WIDTH], False),
        "ln_final.bias": ([WIDTH], False),
        "text_projection": ([WIDTH, EMBED_DIM], True),
        "logit_scale": ([], True),
    }
    for i in range(LAYERS):
        last = i == LAYERS - 1
        block = {"attn.in_proj_weight": [3 * WIDTH, WIDTH], "attn.in_proj_bias": [3 * WIDTH],
                 "attn.out_proj.weight": [WIDTH, WIDTH], "attn.out_proj.bias": [WIDTH],
                 "ln_1.weight": [WIDTH], "ln_1.bias": [WIDTH], "ln_2.weight": [WIDTH], "ln_2.bias": [WIDTH],
                 "mlp.c_fc.weight": [MLP, WIDTH], "mlp.c_fc.bias": [MLP],
                 "mlp.c_proj.weight": [WIDTH, MLP], "mlp.c_proj.bias": [WIDTH]}
        for k, shape in block.items():
            out[f"transformer.resblocks.{i}.{k}"] = (shape, last)
    _check_against_diffusers(out)
    return {TE + k: v for k, v in out.items()}


def _check_against_diffusers(openclip: dict[str, tuple[list[int], bool]]) -> None:
    import torch
    from diffusers.loaders.single_file_utils import convert_open_clip_checkpoint
    from transformers import CLIPTextConfig, CLIPTextModel

    config = CLIPTextConfig(vocab_size=VOCAB, hidden_size=WIDTH, intermediate_size=MLP, num_hidden_layers=LAYERS - 1,
                            num_attention_heads=HEADS, max_position_embeddings=CONTEXT, projection_dim=512,
                            hidden_act="gelu")
    with torch.device("meta"):
        model = CLIPTextModel(config)
        ckpt = {TE + k: torch.empty(shape) for k, (shape, _) in openclip.items()}
    converted = convert_open_clip_checkpoint(model, ckpt, prefix=TE)
    want = {k.removeprefix("text_model."): list(v.shape) for k, v in model.state_dict().items()
            if not k.endswith("position_ids")}
    got = {k.removeprefix("text_model."): list(v.shape) for k, v in converted.items()}
    assert got == want, sorted(set(got.items()) ^ set((k, tuple(v)) for k, v in want.items()))[:5]


def build() -> dict:
    sd1 = json.loads((ARCH_DIR / "sd1.json").read_text())["components"]
    unet = unet_shapes(list(sd1["diffuser"]))
    components = {
        "clip_h": {k: {"shape": s, "dtype": "float32", **({"optional": True} if opt else {})}
                   for k, (s, opt) in sorted(text_encoder_shapes().items())},
        "vae": sd1["vae"],
        "diffuser": {k: {"shape": unet[k], "dtype": "float32"} for k in sorted(unet)},
        "ema": {},
        "scheduler": sd1["scheduler"],
    }
    for k, spec in sd1["ema"].items():
        source = _ema_source(k, unet)
        components["ema"][k] = dict(spec, shape=unet[source]) if source else spec
    return {"name": "sd2", "components": components}


def _ema_source(ema_key: str, unet: dict) -> str | None:
    """The UNet key an EMA key shadows (`model_ema.diffusion_modelinput_blocks00bias`)."""
    flat = {"model_ema." + "".join(k.split(".")[1:]): k for k in unet}
    return flat.get(ema_key)


def render(doc: dict) -> str:
    """sd1.json's layout: one key per line."""
    lines = ["{", f'  "name": {json.dumps(doc["name"])},', '  "components": {']
    groups = list(doc["components"].items())
    for gi, (group, keys) in enumerate(groups):
        lines.append(f"    {json.dumps(group)}: {{")
        items = list(keys.items())
        for i, (k, spec) in enumerate(items):
            comma = "," if i < len(items) - 1 else ""
            lines.append(f"      {json.dumps(k)}: {json.dumps(spec, separators=(',', ':'))}{comma}")
        lines.append("    }" + ("," if gi < len(groups) - 1 else ""))
    lines += ["  }", "}"]
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--check", action="store_true", help="compare with the committed sd2.json instead of writing")
    args = ap.parse_args()
    text = render(build())
    target = ARCH_DIR / "sd2.json"
    if args.check:
        same = target.is_file() and target.read_text() == text
        print("sd2.json is up to date" if same else "sd2.json differs from what the script builds")
        return 0 if same else 1
    target.write_text(text)
    print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
