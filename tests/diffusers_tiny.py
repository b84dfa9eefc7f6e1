"""Tiny diffusers pipelines made with the `diffusers` library itself, for the diffusers source and
format tests (and the docs test): the real component classes and block layouts of SD1, SD2 and SDXL, so
every key name is the real one, at a few channels per layer so that building, saving and loading
take well under a second.

Architecture detection goes by key names, never shapes, so these folders are detected as the real
architectures; only their shapes are small (as tests/conftest.py's synthetic single files are). Channel counts grow from level to level as
in the real models, so the layers that exist only where channels change (resnet shortcuts) exist.
"""

from __future__ import annotations

import json
from pathlib import Path

# A byte-level BPE vocabulary that covers the lower-case letters and the special tokens: enough for
# CLIPTokenizer to load and tokenize a prompt.
_LETTERS = "abcdefghijklmnopqrstuvwxyz"


def write_tokenizer(folder: Path) -> None:
    from transformers import CLIPTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in _LETTERS:
        vocab[c] = len(vocab)
        vocab[c + "</w>"] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    tok = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=77)
    tok.save_pretrained(str(folder))


def _clip_config(layers: int, projection: bool, hidden: int = 8):
    from transformers import CLIPTextConfig

    return CLIPTextConfig(vocab_size=60, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                          num_attention_heads=2, max_position_embeddings=77, projection_dim=8,
                          hidden_act="gelu" if projection else "quick_gelu", bos_token_id=0, eos_token_id=1,
                          pad_token_id=1)


def _vae(seed: int):
    import torch
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    return AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4,
                         down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                         block_out_channels=(4, 8, 16, 16), layers_per_block=2, norm_num_groups=4,
                         sample_size=32)


def _randomize(module, seed: int) -> None:
    """Every parameter random (diffusers initialises some to zeros or ones, which would hide a
    mapping that swaps two of them)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)


def sd1_pipeline(seed: int = 0):
    import torch
    from diffusers import DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(4, 8, 16, 16),
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        cross_attention_dim=8, attention_head_dim=2, norm_num_groups=4)
    text = CLIPTextModel(_clip_config(12, False))
    vae = _vae(seed)
    for i, m in enumerate((unet, text, vae)):
        _randomize(m, seed * 10 + i)
    return StableDiffusionPipeline(vae=vae, text_encoder=text, tokenizer=None, unet=unet,
                                   scheduler=DDIMScheduler(steps_offset=1, clip_sample=False), safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)


def sd2_pipeline(seed: int = 0):
    """SD2 (768-v): SD1's UNet layout with linear attention projections, heads of a fixed width and a
    wider cross-attention context; an OpenCLIP-H text encoder as diffusers converts it (a 23-layer,
    gelu CLIPTextModel); a v-prediction scheduler."""
    import torch
    from diffusers import DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(4, 8, 16, 16),
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        cross_attention_dim=12, attention_head_dim=(1, 2, 4, 4), use_linear_projection=True, norm_num_groups=4)
    text = CLIPTextModel(_clip_config(23, True, hidden=12))
    vae = _vae(seed)
    for i, m in enumerate((unet, text, vae)):
        _randomize(m, seed * 10 + i)
    scheduler = DDIMScheduler(steps_offset=1, clip_sample=False, prediction_type="v_prediction")
    return StableDiffusionPipeline(vae=vae, text_encoder=text, tokenizer=None, unet=unet, scheduler=scheduler,
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)


def sdxl_pipeline(seed: int = 0):
    import torch
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(4, 8, 16),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        transformer_layers_per_block=(1, 2, 10), cross_attention_dim=16, attention_head_dim=(2, 2, 2),
        use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=4,
        projection_class_embeddings_input_dim=8 + 6 * 4, norm_num_groups=4)
    text = CLIPTextModel(_clip_config(12, False))
    text2 = CLIPTextModelWithProjection(_clip_config(32, True))
    vae = _vae(seed)
    for i, m in enumerate((unet, text, text2, vae)):
        _randomize(m, seed * 10 + i)
    return StableDiffusionXLPipeline(vae=vae, text_encoder=text, text_encoder_2=text2, tokenizer=None,
                                     tokenizer_2=None, unet=unet, scheduler=EulerDiscreteScheduler())


def _t5(seed: int, layers: int = 24):
    """A T5 v1.1-style encoder (gated-gelu, untied head) with T5-XXL's 24 blocks."""
    from transformers import T5Config, T5EncoderModel

    model = T5EncoderModel(T5Config(vocab_size=64, d_model=8, d_kv=4, d_ff=16, num_layers=layers, num_heads=2,
                                    feed_forward_proj="gated-gelu", relative_attention_num_buckets=8,
                                    relative_attention_max_distance=16, tie_word_embeddings=False))
    _randomize(model, seed)
    return model


def _dit_vae(seed: int):
    """The 16-channel latent VAE of SD3 and Flux (shift and scale factors in its config only)."""
    import torch
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    return AutoencoderKL(in_channels=3, out_channels=3, latent_channels=16,
                         down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                         block_out_channels=(4, 8, 16, 16), layers_per_block=2, norm_num_groups=4, sample_size=32,
                         use_quant_conv=False, use_post_quant_conv=False, shift_factor=0.0609, scaling_factor=1.5035)


def sd3_pipeline(seed: int = 0):
    """SD3 medium's components: the MMDiT (24 joint blocks), CLIP-L and OpenCLIP-G (both with
    projection, in transformers names), T5 (24 blocks), a 16-channel VAE."""
    import torch
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline
    from transformers import CLIPTextModelWithProjection

    torch.manual_seed(seed)
    transformer = SD3Transformer2DModel(sample_size=8, patch_size=2, in_channels=16, num_layers=24,
                                        attention_head_dim=4, num_attention_heads=2, joint_attention_dim=8,
                                        caption_projection_dim=8, pooled_projection_dim=16, out_channels=16,
                                        pos_embed_max_size=8)
    clip_l = CLIPTextModelWithProjection(_clip_config(12, False))
    clip_g = CLIPTextModelWithProjection(_clip_config(32, True))
    vae = _dit_vae(seed)
    for i, m in enumerate((transformer, clip_l, clip_g, vae)):
        _randomize(m, seed * 10 + i)
    return StableDiffusion3Pipeline(transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
                                    vae=vae, text_encoder=clip_l, tokenizer=None, text_encoder_2=clip_g,
                                    tokenizer_2=None, text_encoder_3=_t5(seed * 10 + 5), tokenizer_3=None)


def flux_pipeline(seed: int = 0):
    """Flux.1 dev's components: the transformer (19 double, 38 single blocks), CLIP-L without
    projection, T5 (24 blocks), a 16-channel VAE."""
    import torch
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from transformers import CLIPTextModel

    torch.manual_seed(seed)
    transformer = FluxTransformer2DModel(patch_size=1, in_channels=64, num_layers=19, num_single_layers=38,
                                         attention_head_dim=4, num_attention_heads=2, joint_attention_dim=8,
                                         pooled_projection_dim=8, guidance_embeds=True, axes_dims_rope=(0, 2, 2))
    clip_l = CLIPTextModel(_clip_config(12, False))
    vae = _dit_vae(seed)
    for i, m in enumerate((transformer, clip_l, vae)):
        _randomize(m, seed * 10 + i)
    return FluxPipeline(transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0), vae=vae,
                        text_encoder=clip_l, tokenizer=None, text_encoder_2=_t5(seed * 10 + 5), tokenizer_2=None)


def save_pipeline(pipe, folder: Path, *, variant: str | None = None, safe: bool = True) -> Path:
    """`pipe` saved with save_pretrained, with a tokenizer written beside each CLIP text encoder (a
    T5 encoder's stays null: only the weights are under test)."""
    folder = Path(folder)
    pipe.save_pretrained(str(folder), safe_serialization=safe, variant=variant)
    index = json.loads((folder / "model_index.json").read_text())
    for name, encoder in (("tokenizer", "text_encoder"), ("tokenizer_2", "text_encoder_2"),
                          ("tokenizer_3", "text_encoder_3")):
        if name in index and str((index.get(encoder) or [None, None])[1]).startswith("CLIP"):
            write_tokenizer(folder / name)
            index[name] = ["transformers", "CLIPTokenizer"]
    (folder / "model_index.json").write_text(json.dumps(index, indent=2))
    return folder


def make(kind: str, folder: Path, seed: int = 0, **kw) -> Path:
    pipe = {"sd1": sd1_pipeline, "sd2": sd2_pipeline, "sdxl": sdxl_pipeline, "sd3": sd3_pipeline,
            "flux": flux_pipeline}[kind](seed)
    return save_pipeline(pipe, folder, **kw)
