"""The adapter key maps (mechalang/archs/keymap.py + stdlib/keymaps/*.toml), checked against the
reference key inventories: LDM/SGM names against the same models in diffusers names, and the
row slices of fused weights against real and scaled-down shapes."""

from __future__ import annotations

import itertools

import pytest

from mechalang.archs import keymap
from mechalang.archs.keymap import DIALECTS, ModuleTarget, export_name, module_names, module_pieces
from mechalang.archs.registry import STDLIB_DIR, load_inventory

ARCHS = ["sd1", "sd2", "sdxl", "flux", "sd3"]


def inventory(name: str, component: str | None = None) -> dict[str, tuple[int, ...]]:
    specs, owner = load_inventory(STDLIB_DIR / f"{name}.json")
    return {k: s.shape for k, s in specs.items() if component is None or owner[k] == component}


def weights(keys) -> list[str]:
    return [k for k in keys if k.endswith((".weight", ".in_proj_weight"))]


def scaled(keys, by: int) -> dict[str, tuple[int, ...]]:
    return {k: tuple(max(1, d // by) for d in s) for k, s in keys.items()}


def only(names, name) -> ModuleTarget:
    targets = names[name]
    assert len(targets) == 1, targets
    return targets[0]


# ------------------------------------------------------------------------------------------------
# The data loads, and the examples people will look for


def test_bundled_keymaps_load():
    assert {"generic", *ARCHS} <= keymap._available()
    for name in keymap._available():
        km = keymap._load(name)
        assert km.components


def test_brief_example_sd1_kohya():
    names = module_names("sd1", inventory("sd1"))
    assert only(names, "lora_unet_down_blocks_0_attentions_0_proj_in") == ModuleTarget(
        "model.diffusion_model.input_blocks.1.1.proj_in.weight", None)


@pytest.mark.parametrize("arch, name, key", [
    ("sd1", "model.diffusion_model.input_blocks.1.1.proj_in", "model.diffusion_model.input_blocks.1.1.proj_in.weight"),
    ("sd1", "diffusion_model.middle_block.1.proj_out", "model.diffusion_model.middle_block.1.proj_out.weight"),
    ("sd1", "unet.down_blocks.0.resnets.0.conv1", "model.diffusion_model.input_blocks.1.0.in_layers.2.weight"),
    ("sd1", "unet.up_blocks.0.upsamplers.0.conv", "model.diffusion_model.output_blocks.2.1.conv.weight"),
    ("sd1", "unet.up_blocks.2.upsamplers.0.conv", "model.diffusion_model.output_blocks.8.2.conv.weight"),
    ("sd1", "lora_unet_input_blocks_1_1_proj_in", "model.diffusion_model.input_blocks.1.1.proj_in.weight"),
    ("sd1", "lora_te_text_model_encoder_layers_0_self_attn_q_proj",
     "cond_stage_model.transformer.text_model.encoder.layers.0.self_attn.q_proj.weight"),
    ("sd1", "text_encoder.text_model.encoder.layers.11.mlp.fc2",
     "cond_stage_model.transformer.text_model.encoder.layers.11.mlp.fc2.weight"),
    ("sd1", "text_encoders.clip_l.transformer.text_model.encoder.layers.3.mlp.fc1",
     "cond_stage_model.transformer.text_model.encoder.layers.3.mlp.fc1.weight"),
    ("sd2", "lora_unet_down_blocks_0_attentions_0_proj_in", "model.diffusion_model.input_blocks.1.1.proj_in.weight"),
    ("sd2", "unet.up_blocks.3.attentions.2.transformer_blocks.0.attn2.to_k",
     "model.diffusion_model.output_blocks.11.1.transformer_blocks.0.attn2.to_k.weight"),
    ("sd2", "lora_te_text_model_encoder_layers_22_mlp_fc2", "cond_stage_model.model.transformer.resblocks.22.mlp.c_proj.weight"),
    ("sd2", "text_encoder.text_model.encoder.layers.0.self_attn.out_proj",
     "cond_stage_model.model.transformer.resblocks.0.attn.out_proj.weight"),
    ("sdxl", "lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_k",
     "model.diffusion_model.input_blocks.4.1.transformer_blocks.0.attn1.to_k.weight"),
    ("sdxl", "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_k",
     "model.diffusion_model.input_blocks.4.1.transformer_blocks.0.attn1.to_k.weight"),
    ("sdxl", "unet.add_embedding.linear_2", "model.diffusion_model.label_emb.0.2.weight"),
    ("sdxl", "lora_te1_text_model_encoder_layers_0_mlp_fc1",
     "conditioner.embedders.0.transformer.text_model.encoder.layers.0.mlp.fc1.weight"),
    ("sdxl", "lora_te2_text_model_encoder_layers_31_mlp_fc2",
     "conditioner.embedders.1.model.transformer.resblocks.31.mlp.c_proj.weight"),
    ("sdxl", "text_encoder_2.text_model.encoder.layers.0.self_attn.out_proj",
     "conditioner.embedders.1.model.transformer.resblocks.0.attn.out_proj.weight"),
    ("flux", "lora_unet_double_blocks_0_img_attn_qkv", "model.diffusion_model.double_blocks.0.img_attn.qkv.weight"),
    ("flux", "lora_unet_single_blocks_37_linear1", "model.diffusion_model.single_blocks.37.linear1.weight"),
    ("flux", "double_blocks.18.txt_mlp.2", "model.diffusion_model.double_blocks.18.txt_mlp.2.weight"),
    ("flux", "transformer.transformer_blocks.3.attn.to_add_out",
     "model.diffusion_model.double_blocks.3.txt_attn.proj.weight"),
    ("flux", "transformer.single_transformer_blocks.5.norm.linear",
     "model.diffusion_model.single_blocks.5.modulation.lin.weight"),
    ("flux", "transformer.time_text_embed.guidance_embedder.linear_2",
     "model.diffusion_model.guidance_in.out_layer.weight"),
    ("flux", "transformer.proj_out", "model.diffusion_model.final_layer.linear.weight"),
    ("flux", "lora_te1_text_model_encoder_layers_0_self_attn_q_proj",
     "text_encoders.clip_l.transformer.text_model.encoder.layers.0.self_attn.q_proj.weight"),
    ("flux", "lora_te3_encoder_block_0_layer_0_SelfAttention_q",
     "text_encoders.t5xxl.transformer.encoder.block.0.layer.0.SelfAttention.q.weight"),
    ("flux", "lora_te2_encoder_block_0_layer_0_SelfAttention_q",
     "text_encoders.t5xxl.transformer.encoder.block.0.layer.0.SelfAttention.q.weight"),
    ("flux", "text_encoder_2.encoder.block.1.layer.1.DenseReluDense.wo",
     "text_encoders.t5xxl.transformer.encoder.block.1.layer.1.DenseReluDense.wo.weight"),
    ("sd3", "lora_unet_joint_blocks_0_x_block_attn_qkv", "model.diffusion_model.joint_blocks.0.x_block.attn.qkv.weight"),
    ("sd3", "transformer.transformer_blocks.2.ff_context.net.2",
     "model.diffusion_model.joint_blocks.2.context_block.mlp.fc2.weight"),
    ("sd3", "transformer.pos_embed.proj", "model.diffusion_model.x_embedder.proj.weight"),
    ("sd3", "transformer.time_text_embed.text_embedder.linear_1", "model.diffusion_model.y_embedder.mlp.0.weight"),
    ("sd3", "lora_te2_text_model_encoder_layers_0_self_attn_q_proj",
     "text_encoders.clip_g.transformer.text_model.encoder.layers.0.self_attn.q_proj.weight"),
    ("sd3", "lora_te3_encoder_block_0_layer_0_SelfAttention_k",
     "text_encoders.t5xxl.transformer.encoder.block.0.layer.0.SelfAttention.k.weight"),
    ("sd3", "text_encoder_3.encoder.block.0.layer.0.SelfAttention.v",
     "text_encoders.t5xxl.transformer.encoder.block.0.layer.0.SelfAttention.v.weight"),
])
def test_known_names(arch, name, key):
    assert only(module_names(arch, inventory(arch)), name) == ModuleTarget(key, None)


def test_export_spellings():
    sd1 = inventory("sd1")
    key = "model.diffusion_model.input_blocks.1.1.proj_in.weight"
    assert export_name("sd1", key, "native", sd1) == ("model.diffusion_model.input_blocks.1.1.proj_in", None)
    assert export_name("sd1", key, "comfy", sd1) == ("diffusion_model.input_blocks.1.1.proj_in", None)
    assert export_name("sd1", key, "kohya", sd1) == ("lora_unet_down_blocks_0_attentions_0_proj_in", None)
    assert export_name("sd1", key, "diffusers", sd1) == ("unet.down_blocks.0.attentions.0.proj_in", None)
    sdxl = inventory("sdxl")
    key = "model.diffusion_model.output_blocks.2.2.conv.weight"
    assert export_name("sdxl", key, "kohya", sdxl) == ("lora_unet_output_blocks_2_2_conv", None)
    assert export_name("sdxl", key, "diffusers", sdxl) == ("unet.up_blocks.0.upsamplers.0.conv", None)
    flux = inventory("flux")
    key = "model.diffusion_model.double_blocks.0.img_attn.qkv.weight"
    assert export_name("flux", key, "native", flux) == ("model.diffusion_model.double_blocks.0.img_attn.qkv", None)
    assert export_name("flux", key, "kohya", flux) == ("lora_unet_double_blocks_0_img_attn_qkv", None)
    # diffusers only has the pieces: the first comes with its rows, module_pieces has them all
    assert export_name("flux", key, "diffusers", flux) == ("transformer.transformer_blocks.0.attn.to_q", (0, 3072))
    t5 = "text_encoders.t5xxl.transformer.encoder.block.0.layer.0.SelfAttention.q.weight"
    assert export_name("flux", t5, "kohya", flux) == ("lora_te3_encoder_block_0_layer_0_SelfAttention_q", None)
    # the VAE has no name outside native
    vae = "first_stage_model.decoder.conv_in.weight"
    assert export_name("sd1", vae, "native", sd1) == ("first_stage_model.decoder.conv_in", None)
    assert all(export_name("sd1", vae, d, sd1) is None for d in ("comfy", "kohya", "diffusers"))


def test_clip_g_in_proj_pieces():
    sdxl = inventory("sdxl")
    key = "conditioner.embedders.1.model.transformer.resblocks.0.attn.in_proj_weight"
    assert module_pieces("sdxl", key, "kohya", sdxl) == [
        ("lora_te2_text_model_encoder_layers_0_self_attn_q_proj", (0, 1280)),
        ("lora_te2_text_model_encoder_layers_0_self_attn_k_proj", (1280, 2560)),
        ("lora_te2_text_model_encoder_layers_0_self_attn_v_proj", (2560, 3840)),
    ]
    assert module_pieces("sdxl", key, "native", sdxl) == [
        ("conditioner.embedders.1.model.transformer.resblocks.0.attn.in_proj", None)]
    names = module_names("sdxl", sdxl)
    assert only(names, "text_encoder_2.text_model.encoder.layers.0.self_attn.v_proj") == ModuleTarget(key, (2560, 3840))


def test_sd2_text_encoder_pieces_and_its_last_block():
    """SD2's OpenCLIP-H is named as the 23-layer CLIPTextModel kohya and diffusers convert it to:
    q/k/v are row slices of in_proj, and the 24th block (unused by SD2) has no adapter name."""
    sd2 = inventory("sd2")
    key = "cond_stage_model.model.transformer.resblocks.5.attn.in_proj_weight"
    assert module_pieces("sd2", key, "kohya", sd2) == [
        (f"lora_te_text_model_encoder_layers_5_self_attn_{p}_proj", (i * 1024, (i + 1) * 1024))
        for i, p in enumerate("qkv")]
    last = "cond_stage_model.model.transformer.resblocks.23.mlp.c_fc.weight"
    assert module_pieces("sd2", last, "kohya", sd2) == module_pieces("sd2", last, "diffusers", sd2) == []
    assert module_pieces("sd2", last, "native", sd2) == [("cond_stage_model.model.transformer.resblocks.23.mlp.c_fc", None)]


@pytest.mark.filterwarnings("ignore::FutureWarning")  # diffusers deprecates image_size=, which sets no key
def test_sd2_names_and_shapes_against_diffusers_and_transformers_models():
    """Every SD2 weight's diffusers name is a parameter of diffusers' SD2 UNet / transformers'
    SD2 text encoder (built on the meta device from the reference configs) with the shape of its
    rows, and every parameter of them is reached: the keymap and sd2.json agree with the libraries."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("diffusers")
    import importlib.util
    from pathlib import Path

    from diffusers import UNet2DConditionModel
    from diffusers.loaders.single_file_utils import create_unet_diffusers_config_from_ldm
    from transformers import CLIPTextConfig, CLIPTextModel

    spec = importlib.util.spec_from_file_location("build_sd2", Path(__file__).parent.parent / "tools" / "build_sd2_inventory.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    with torch.device("meta"):
        unet = UNet2DConditionModel(**create_unet_diffusers_config_from_ldm(tool.V2_LDM_CONFIG, {}, image_size=768))
        te = CLIPTextModel(CLIPTextConfig(vocab_size=49408, hidden_size=1024, intermediate_size=4096,
                                          num_hidden_layers=23, num_attention_heads=16, hidden_act="gelu"))
    params = {"unet." + k: tuple(v.shape) for k, v in unet.state_dict().items() if k.endswith(".weight")}
    params |= {"text_encoder.text_model." + k.removeprefix("text_model."): tuple(v.shape)
               for k, v in te.state_dict().items() if k.endswith(".weight")}
    keys = inventory("sd2")
    reached = set()
    for key in weights(keys):
        for name, rows in module_pieces("sd2", key, "diffusers", keys):
            start, stop = rows or (0, keys[key][0])
            assert params[name + ".weight"] == (stop - start, *keys[key][1:]), (key, name)
            reached.add(name + ".weight")
    # OpenCLIP keeps the positional embedding outside `.weight` keys: only whole-pipeline mapping names it
    assert set(params) - reached == {"text_encoder.text_model.embeddings.position_embedding.weight"}


def test_flux_rows_full_size():
    flux = inventory("flux")
    names = module_names("flux", flux)
    lin1 = "model.diffusion_model.single_blocks.0.linear1.weight"
    assert flux[lin1] == (21504, 3072)
    assert only(names, "transformer.single_transformer_blocks.0.attn.to_k") == ModuleTarget(lin1, (3072, 6144))
    assert only(names, "transformer.single_transformer_blocks.0.proj_mlp") == ModuleTarget(lin1, (9216, 21504))
    assert only(names, "transformer.transformer_blocks.0.attn.add_v_proj") == ModuleTarget(
        "model.diffusion_model.double_blocks.0.txt_attn.qkv.weight", (6144, 9216))
    # OneTrainer's spelling of the same pieces
    assert only(names, "lora_transformer_single_transformer_blocks_0_proj_mlp") == ModuleTarget(lin1, (9216, 21504))


# ------------------------------------------------------------------------------------------------
# Against the reference inventories: the UNet maps are bijections onto the diffusers names


def _diffusers_unet_names(arch: str) -> dict[str, str]:
    """diffusers UNet path -> checkpoint key, for every UNet weight of the full inventory."""
    keys = inventory(arch)
    out = {}
    for key in weights(inventory(arch, "diffuser")):
        pieces = module_pieces(arch, key, "diffusers", keys)
        assert len(pieces) == 1 and pieces[0][1] is None, (key, pieces)
        name = pieces[0][0]
        assert name.startswith("unet."), name
        assert name[5:] not in out, name
        out[name[5:]] = key
    return out


@pytest.mark.parametrize("arch, reference, prefix", [
    ("sd1", "sd1-kohya", "unet."),
    ("sdxl", "sdxl-diffusers-unet", ""),
])
def test_unet_bijection_with_diffusers_names(arch, reference, prefix):
    keys = inventory(arch)
    ref = {k[len(prefix):]: s for k, s in inventory(reference, "diffuser").items()}
    ref_weights = {k[:-len(".weight")]: s for k, s in ref.items() if k.endswith(".weight")}
    mapped = _diffusers_unet_names(arch)
    assert set(mapped) == set(ref_weights)          # every weight on both sides, each once
    for path, key in mapped.items():
        assert keys[key] == ref_weights[path], (path, key)
    # and module_names reads every diffusers / kohya name of the reference back
    names = module_names(arch, keys)
    for path, key in mapped.items():
        assert only(names, "unet." + path) == ModuleTarget(key, None)
        assert only(names, "lora_unet_" + path.replace(".", "_")) == ModuleTarget(key, None)


@pytest.mark.parametrize("arch, component, reference, ref_component, ref_prefix, dialect_prefix", [
    ("sd1", "clip_l", "sd1-kohya", "clip_l", "te.", "text_encoder."),
    ("sdxl", "clip_l", "sdxl-kohya", "clip_l", "te1.", "text_encoder."),
    ("sdxl", "clip_g", "sdxl-kohya", "clip_g", "te2.", "text_encoder_2."),
])
def test_text_encoders_against_transformers_names(arch, component, reference, ref_component, ref_prefix,
                                                  dialect_prefix):
    keys = inventory(arch)
    names = module_names(arch, keys)
    ref = inventory(reference, ref_component)
    # Parameters OpenCLIP keeps outside `.weight` keys (the positional embedding) or transposed
    # (the text projection) have no name; the rest all map, each to a slice of its real shape.
    unmapped = {"te2.text_model.embeddings.position_embedding.weight", "te2.text_projection.weight"}
    hit = set()
    for rkey in weights(ref):
        name = dialect_prefix + rkey[len(ref_prefix):-len(".weight")]
        if rkey in unmapped:
            assert name not in names
            continue
        (target,) = names[name]
        shape = keys[target.key]
        start, stop = target.rows or (0, shape[0])
        assert (stop - start, *shape[1:]) == ref[rkey], (rkey, target)
        hit.add(target)
    # every weight of the component is reached, fused ones through all their rows
    comp_weights = set(weights(inventory(arch, component)))
    assert {t.key for t in hit} == comp_weights
    for key in comp_weights:
        assert max(t.rows or (0, keys[key][0]) for t in hit if t.key == key)[1] == keys[key][0]


@pytest.mark.parametrize("arch", ["flux", "sd3"])
def test_dit_every_weight_has_a_diffusers_name(arch):
    keys = inventory(arch)
    unnamed = [k for k in weights(inventory(arch, "diffuser")) if not module_pieces(arch, k, "diffusers", keys)]
    expected = ["model.diffusion_model.final_layer.adaLN_modulation.1.weight"]
    if arch == "sd3":   # the last block's text-stream norm has its halves swapped in diffusers
        expected.append("model.diffusion_model.joint_blocks.23.context_block.adaLN_modulation.1.weight")
    assert sorted(unnamed) == sorted(expected)
    if arch == "sd3":
        assert module_pieces(arch, "model.diffusion_model.joint_blocks.22.context_block.adaLN_modulation.1.weight",
                             "diffusers", keys) == [("transformer.transformer_blocks.22.norm1_context.linear", None)]


# ------------------------------------------------------------------------------------------------
# Properties over every architecture, at full size and scaled down


def _check_consistent(arch: str, keys: dict) -> None:
    names = module_names(arch, keys)
    for name, targets in names.items():
        assert len(targets) == 1, (name, targets)       # never ambiguous
        t = targets[0]
        assert t.key in keys
        assert not name.endswith("weight"), name
    for key in weights(keys):
        for dialect in DIALECTS:
            pieces = module_pieces(arch, key, dialect, keys)
            assert export_name(arch, key, dialect, keys) == (pieces[0] if pieces else None)
            for name, rows in pieces:                    # round trip
                assert ModuleTarget(key, rows) in names[name], (dialect, key, name)
            if any(rows is not None for _, rows in pieces):  # fused: the pieces tile dim 0
                spans = sorted(rows for _, rows in pieces)
                assert spans[0][0] == 0 and spans[-1][1] == keys[key][0]
                assert all(a[1] == b[0] for a, b in itertools.pairwise(spans))
        assert module_pieces(arch, key, "native", keys), key  # every weight has its own name


@pytest.mark.parametrize("arch", ARCHS)
def test_consistent_full_size(arch):
    _check_consistent(arch, inventory(arch))


@pytest.mark.parametrize("arch", ARCHS)
def test_consistent_scaled_down(arch):
    _check_consistent(arch, scaled(inventory(arch), 16))


def test_rows_follow_scaled_shapes():
    flux = scaled(inventory("flux"), 16)
    lin1 = "model.diffusion_model.single_blocks.2.linear1.weight"
    assert flux[lin1] == (1344, 192)
    assert module_pieces("flux", lin1, "diffusers", flux) == [
        ("transformer.single_transformer_blocks.2.attn.to_q", (0, 192)),
        ("transformer.single_transformer_blocks.2.attn.to_k", (192, 384)),
        ("transformer.single_transformer_blocks.2.attn.to_v", (384, 576)),
        ("transformer.single_transformer_blocks.2.proj_mlp", (576, 1344)),
    ]
    sdxl = scaled(inventory("sdxl"), 16)
    key = "conditioner.embedders.1.model.transformer.resblocks.7.attn.in_proj_weight"
    assert [r for _, r in module_pieces("sdxl", key, "kohya", sdxl)] == [(0, 80), (80, 160), (160, 240)]


def test_tiny_flux():
    h, mlp = 64, 256
    keys = {
        "model.diffusion_model.double_blocks.0.img_attn.qkv.weight": (3 * h, h),
        "model.diffusion_model.double_blocks.0.img_attn.qkv.bias": (3 * h,),
        "model.diffusion_model.single_blocks.0.linear1.weight": (3 * h + mlp, h),
        "model.diffusion_model.single_blocks.0.linear2.weight": (h, h + mlp),
    }
    names = module_names("flux", keys)
    assert only(names, "transformer.transformer_blocks.0.attn.to_v").rows == (128, 192)
    assert only(names, "transformer.single_transformer_blocks.0.proj_mlp").rows == (192, 448)
    assert only(names, "transformer.single_transformer_blocks.0.proj_out") == ModuleTarget(
        "model.diffusion_model.single_blocks.0.linear2.weight", None)
    assert not any(t.key.endswith(".bias") for ts in names.values() for t in ts)


def test_pieces_that_do_not_fit_the_shape_are_not_named():
    # q, k and v of width 64 cannot fill 100 rows: no diffusers names, the native name stays
    keys = {"model.diffusion_model.double_blocks.0.img_attn.qkv.weight": (100, 64)}
    assert module_pieces("flux", next(iter(keys)), "diffusers", keys) == []
    assert set(module_names("flux", keys)) == {
        "model.diffusion_model.double_blocks.0.img_attn.qkv", "diffusion_model.double_blocks.0.img_attn.qkv",
        "lora_unet_double_blocks_0_img_attn_qkv", "double_blocks.0.img_attn.qkv"}


# ------------------------------------------------------------------------------------------------
# Generic rules, aliases, edge cases


def test_generic_rules_for_other_architectures():
    keys = {
        "model.layers.0.self_attn.q_proj.weight": (8, 8),
        "model.layers.0.self_attn.q_proj.bias": (8,),
        "model.diffusion_model.blocks.0.attn.qkv.weight": (24, 8),
        "logit_scale": (),
    }
    names = module_names("llama", keys)
    assert names == {
        "model.layers.0.self_attn.q_proj": (ModuleTarget("model.layers.0.self_attn.q_proj.weight", None),),
        "model.diffusion_model.blocks.0.attn.qkv": (ModuleTarget("model.diffusion_model.blocks.0.attn.qkv.weight",
                                                                 None),),
        "diffusion_model.blocks.0.attn.qkv": (ModuleTarget("model.diffusion_model.blocks.0.attn.qkv.weight", None),),
        "lora_unet_blocks_0_attn_qkv": (ModuleTarget("model.diffusion_model.blocks.0.attn.qkv.weight", None),),
    }
    assert module_names("no-such-arch", keys) == names
    assert export_name("llama", "model.layers.0.self_attn.q_proj.weight", "diffusers", keys) is None


def test_aliases_use_the_architecture_keymap():
    sd1 = inventory("sd1")
    assert module_names("sd15", sd1) == module_names("sd1", sd1)


def test_edge_cases():
    sd1 = inventory("sd1")
    key = "model.diffusion_model.input_blocks.1.1.proj_in.weight"
    with pytest.raises(ValueError, match="dialect"):
        module_pieces("sd1", key, "lycoris", sd1)
    assert module_pieces("sd1", key, "kohya", {}) == []
    assert export_name("sd1", "model.diffusion_model.input_blocks.1.1.proj_in.bias", "native", sd1) is None
    # the result is the caller's to change
    names = module_names("sd1", sd1)
    names.clear()
    assert module_names("sd1", sd1)
    # shapes may come as lists (JSON)
    assert module_names("sd1", {key: [320, 320, 1, 1]})["unet.down_blocks.0.attentions.0.proj_in"]


def test_the_mapping_is_computed_once_per_inventory():
    # Speed is the benchmarks' business (timed tests are flaky on shared machines); what makes a
    # second lookup cheap is that it is cached, which this checks.
    sdxl = inventory("sdxl")
    keymap._module_names.cache_clear()
    first = module_names("sdxl", sdxl)
    second = module_names("sdxl", sdxl)
    assert first == second
    assert keymap._module_names.cache_info().hits >= 1


# ------------------------------------------------------------------------------------------------
# The rule language


def test_rule_expansion():
    assert keymap._expand("input_blocks.{3i+j+1}.0", "down_blocks.{i=0..1}.resnets.{j=0..1}") == [
        ("input_blocks.1.0", "down_blocks.0.resnets.0"), ("input_blocks.2.0", "down_blocks.0.resnets.1"),
        ("input_blocks.4.0", "down_blocks.1.resnets.0"), ("input_blocks.5.0", "down_blocks.1.resnets.1")]
    assert keymap._expand("a.{2*k - 1}", "b.{k=1..2}.{n}") == [("a.1", "b.1.{n}"), ("a.3", "b.2.{n}")]
    with pytest.raises(ValueError, match="undeclared"):
        keymap._expand("a.{i+1}", "b")


@pytest.mark.parametrize("text, message", [
    ('[maps]\nm = [["a", "b"], ["a", "c"]]', "mapped twice"),
    ('[maps]\nm = [["a.x{n}", "b.{n}"]]', "whole segment"),
    ('[maps]\nm = [["a.{n}", "b"]]', "once on each side"),
    ('[maps]\nm = [["a", "b", { mapp = "x" }]]', "unknown field `mapp`"),
    ('[maps]\nm = [["a[2:1]", "b"]]', "a < b"),
    ('[maps]\nm = [["a", "b", "c"]]', "a rule is"),
    ('[[components]]\ncheckpoint = "x."\nnames = [{ dialect = "peft", prefix = "" }]', "unknown dialect"),
    ('colour = 1', "unknown field `colour`"),
    ('[maps\n', "not valid TOML"),
])
def test_broken_keymaps_are_reported(tmp_path, text, message):
    path = tmp_path / "broken.toml"
    path.write_text(text)
    with pytest.raises(keymap.KeymapError, match=message) as exc:
        keymap._read(path, keymap._Keymap([], {}))
    assert exc.value.source == str(path)


def test_fragments_are_included_and_hold_maps_only(tmp_path):
    (tmp_path / "_shared.toml").write_text('[maps]\nblock = [["attn.qkv[0:1]", "q"], ["attn.qkv[1:]", "kv"]]\n')
    (tmp_path / "k.toml").write_text('include = ["_shared.toml"]\n[[components]]\ncheckpoint = "m."\n'
                                    'names = [{ dialect = "diffusers", prefix = "t.", paths = "top" }]\n'
                                    '[maps]\ntop = [["blocks.{n}", "layers.{n}", { map = "block" }]]\n')
    km = keymap._Keymap([], {})
    keymap._read(tmp_path / "k.toml", km)
    assert set(km.maps) == {"top", "block"}
    keys = {"m.blocks.2.attn.qkv.weight": (6, 2)}
    assert [p for _, p in keymap._key_names(km, "m.blocks.2.attn.qkv.weight", keys)] == [
        [("t.layers.2.q", (0, 2)), ("t.layers.2.kv", (2, 6))]]
    # a fragment is maps only, and an include names a fragment
    (tmp_path / "_bad.toml").write_text('[[components]]\ncheckpoint = "x."\n')
    (tmp_path / "k2.toml").write_text('include = ["_bad.toml"]\n')
    with pytest.raises(keymap.KeymapError, match="fragment: unknown field `components`"):
        keymap._read(tmp_path / "k2.toml", keymap._Keymap([], {}))
    (tmp_path / "k3.toml").write_text('include = ["k.toml"]\n')
    with pytest.raises(keymap.KeymapError, match="fragment file names"):
        keymap._read(tmp_path / "k3.toml", keymap._Keymap([], {}))


def test_free_numbers_and_conditions(tmp_path):
    path = tmp_path / "k.toml"
    path.write_text("""
[[components]]
checkpoint = "m."
names = [{ dialect = "diffusers", prefix = "t.", paths = "top" }]
[maps]
top = [["blocks.{n}", "layers.{n}", { map = "block" }], ["blocks.{n}.special", "extra.{n}"]]
block = [["a", "b", { if = "gate" }], ["qkv[0:1]", "q"], ["qkv[1:]", "kv"]]
""")
    km = keymap._Keymap([], {})
    keymap._read(path, km)
    keys = {"m.blocks.3.a.weight": (2, 2), "m.blocks.3.gate.weight": (2, 2), "m.blocks.4.a.weight": (2, 2),
            "m.blocks.5.special.weight": (2, 2), "m.blocks.6.qkv.weight": (6, 2)}

    def names(key):
        return [p for _, p in keymap._key_names(km, key, keys)]

    assert names("m.blocks.3.a.weight") == [[("t.layers.3.b", None)]]
    assert names("m.blocks.4.a.weight") == []          # no gate in block 4
    assert names("m.blocks.5.special.weight") == [[("t.extra.5", None)]]  # longest prefix wins
    assert names("m.blocks.6.qkv.weight") == [[("t.layers.6.q", (0, 2)), ("t.layers.6.kv", (2, 6))]]
