"""SD2 end to end: diffusers pipeline folders made with the `diffusers` library (tests/diffusers_tiny.py:
linear attention projections, an OpenCLIP-H text encoder as diffusers converts it, a v-prediction
scheduler), merged by mecha, written back as a folder that `from_pretrained` loads and as a single
file that diffusers' own single-file conversion reads back, key by key."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

from typer.testing import CliRunner  # noqa: E402

from mechalang.cli import app  # noqa: E402

from . import diffusers_tiny  # noqa: E402
from .test_diffusers_io import assert_close, check, codes_of, lerp, load_sd1, refused, run, state_dicts, write  # noqa: E402

ALPHA = 0.3
TE = "cond_stage_model.model."
#: The single file's text-encoder keys a diffusers SD2 text encoder has no place for.
NO_PLACE = {TE + "text_projection", TE + "logit_scale"} | {
    f"{TE}transformer.resblocks.23.{p}" for p in (
        "attn.in_proj_weight", "attn.in_proj_bias", "attn.out_proj.weight", "attn.out_proj.bias", "ln_1.weight",
        "ln_1.bias", "ln_2.weight", "ln_2.bias", "mlp.c_fc.weight", "mlp.c_fc.bias", "mlp.c_proj.weight",
        "mlp.c_proj.bias")}


@pytest.fixture(scope="module")
def pipes(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("sd2")
    diffusers_tiny.make("sd2", d / "v2_a", seed=5)
    diffusers_tiny.make("sd2", d / "v2_b", seed=6)
    diffusers_tiny.make("sd1", d / "sd1_a", seed=1)
    return d


def load(path, **kw):
    return load_sd1(path, **kw)  # SD2 pipelines are StableDiffusionPipelines


def expected(pipes: Path) -> dict:
    return lerp(state_dicts(load(pipes / "v2_a")), state_dicts(load(pipes / "v2_b")), ALPHA)


def test_two_sd2_folders_merge_to_a_folder_diffusers_loads(pipes, tmp_path):
    planned = run(tmp_path, f'export weighted_sum(model("{pipes}/v2_a/"), model("{pipes}/v2_b/"), alpha={ALPHA}) '
                            f'to "out/" as diffusers\n')
    assert not planned.diagnostics, [(d.code, d.message) for d in planned.diagnostics]
    out = load(tmp_path / "out")
    assert out.unet.config.use_linear_projection and out.text_encoder.config.num_hidden_layers == 23
    assert out.scheduler.config.prediction_type == "v_prediction"
    assert_close(state_dicts(out), expected(pipes))
    for rel in ("model_index.json", "unet/config.json", "text_encoder/config.json", "scheduler/scheduler_config.json"):
        assert (tmp_path / "out" / rel).read_bytes() == (pipes / "v2_a" / rel).read_bytes()


def test_sd2_folders_are_sd2_for_info_and_check(pipes, tmp_path):
    res = CliRunner().invoke(app, ["info", str(pipes / "v2_a")])
    assert res.exit_code == 0 and "arch: sd2" in res.output and "kept under" not in res.output, res.output
    res = CliRunner().invoke(app, ["check", str(write(tmp_path, f'export model("{pipes}/v2_a/") to "x.safetensors"'))])
    assert res.exit_code == 0 and "1 model (sd2)" in res.output and "warning" not in res.output, res.output
    # a component folder alone: SD1's and SD2's UNets have the same names, the config tells them apart
    res = CliRunner().invoke(app, ["info", str(pipes / "v2_a" / "unet")])
    assert res.exit_code == 0 and "arch: sd2" in res.output, res.output
    res = CliRunner().invoke(app, ["info", str(pipes / "sd1_a" / "unet")])
    assert res.exit_code == 0 and "arch: sd1" in res.output, res.output


def _convert_back(ckpt: dict, pipe) -> dict:
    """diffusers' own single-file conversion of an SD2 checkpoint, component by component."""
    from diffusers.loaders.single_file_utils import (
        convert_ldm_unet_checkpoint,
        convert_ldm_vae_checkpoint,
        convert_open_clip_checkpoint,
    )

    te = convert_open_clip_checkpoint(pipe.text_encoder, ckpt, prefix=TE)
    return {"unet": convert_ldm_unet_checkpoint(ckpt, dict(pipe.unet.config)),
            "vae": convert_ldm_vae_checkpoint(ckpt, dict(pipe.vae.config)),
            "text_encoder": {k.removeprefix("text_model."): v for k, v in te.items()}}


def test_single_file_from_sd2_folders_matches_diffusers_conversion(pipes, tmp_path):
    from safetensors.torch import load_file

    run(tmp_path, f'export weighted_sum(model("{pipes}/v2_a/"), model("{pipes}/v2_b/"), alpha={ALPHA}) '
                  f'to "merged.safetensors"\n')
    ckpt = load_file(tmp_path / "merged.safetensors")
    assert not NO_PLACE & set(ckpt)  # what diffusers' SD2 text encoder lacks, the file lacks (as diffusers' own)
    assert ckpt[TE + "transformer.resblocks.0.attn.in_proj_weight"].shape == (36, 12)
    assert ckpt["model.diffusion_model.input_blocks.1.1.proj_in.weight"].ndim == 2
    want = expected(pipes)
    want["text_encoder"] = {k.removeprefix("text_model."): v for k, v in want["text_encoder"].items()}
    assert_close(_convert_back(ckpt, load(pipes / "v2_a")), want)
    # an ordinary sd2 checkpoint: detected as such, nothing unknown, nothing missing
    res = CliRunner().invoke(app, ["check", str(write(tmp_path, 'export model("merged.safetensors") to "x.safetensors"'))])
    assert res.exit_code == 0 and "1 model (sd2)" in res.output and "warning" not in res.output, res.output


def test_single_file_with_the_last_block_written_as_a_folder(pipes, tmp_path):
    """A single file from a UI has the 24th block, text_projection and logit_scale: merged and kept
    in a single file, left out of a folder (W0290 names them), which diffusers loads."""
    from safetensors.torch import load_file, save_file

    run(tmp_path, f'export model("{pipes}/v2_b/") to "b.safetensors"\n')
    ckpt = load_file(tmp_path / "b.safetensors")
    g = torch.Generator().manual_seed(3)
    full = dict(ckpt)
    for k in NO_PLACE:
        like = k.replace(".23.", ".22.")
        full[k] = torch.randn(() if k.endswith("logit_scale") else (12, 12) if k.endswith("text_projection")
                              else ckpt[like].shape, generator=g)
    save_file(full, str(tmp_path / "full.safetensors"))
    # the file first, so that the merge keeps its keys (b + 0.7 (a - b) = a + 0.3 (b - a)); the
    # folder gives the configs
    planned = run(tmp_path, f'let m = weighted_sum(model("full.safetensors"), model("{pipes}/v2_a/"), alpha={1 - ALPHA})\n'
                            f'export m to "out/" as diffusers(config="{pipes}/v2_a/")\n'
                            f'export model("full.safetensors") to "same.safetensors"\n')
    w = [d for d in planned.diagnostics if d.code == "W0290"]
    assert len(w) == 1 and w[0].message.startswith("14 keys with no place"), [d.message for d in planned.diagnostics]
    assert_close(state_dicts(load(tmp_path / "out")), expected(pipes))
    same = load_file(tmp_path / "same.safetensors")
    assert set(same) == set(full) and all(torch.equal(same[k], full[k]) for k in NO_PLACE)
    # the 24th block has no place in a folder, but it is merged like any key in a single file
    run(tmp_path, 'export weighted_sum(model("full.safetensors"), model("full.safetensors"), alpha=0.5) to "twice.safetensors"\n')
    assert set(load_file(tmp_path / "twice.safetensors")) == set(full)


def test_single_sd2_file_to_a_folder_with_config(pipes, tmp_path):
    run(tmp_path, f'export model("{pipes}/v2_b/") to "b.safetensors"\n')
    planned = check(tmp_path, f'export model("b.safetensors") to "out/" as diffusers(config="{pipes}/sd1_a/")\n')
    assert "E0291" in codes_of(planned)  # an SD1 pipeline's configs for an SD2 model
    run(tmp_path, f'export model("b.safetensors") to "out/" as diffusers(config="{pipes}/v2_a/")\n')
    assert_close(state_dicts(load(tmp_path / "out")), state_dicts(load(pipes / "v2_b")))


def test_sd1_and_sd2_folders_do_not_merge(pipes, tmp_path):
    planned = check(tmp_path, f'export weighted_sum(model("{pipes}/sd1_a/"), model("{pipes}/v2_a/"), alpha=0.5) '
                              f'to "out/" as diffusers\n')
    assert "E0220" in codes_of(planned)
    assert not (tmp_path / "out").exists()


def test_a_pipeline_mixing_sd1_and_sd2_components_is_refused(pipes, tmp_path):
    """An SD2 UNet with an SD1 text encoder is neither: refused with both reasons."""
    dest = tmp_path / "broken"
    shutil.copytree(pipes / "v2_a", dest)
    shutil.rmtree(dest / "text_encoder")
    shutil.copytree(pipes / "sd1_a" / "text_encoder", dest / "text_encoder")
    refused(tmp_path, 'export model("broken/") to "out.safetensors"\n', "not sd1: unet/config.json",
            "an SD2 UNet", "not sd2: text_encoder/config.json", "an SD1 text encoder")


def test_kohya_lora_on_sd2(pipes, tmp_path):
    """A kohya LoRA names SD2's text encoder as the 23-layer CLIPTextModel: q/k/v update row slices
    of the single file's fused in_proj, as computed here by hand."""
    from safetensors.torch import load_file, save_file

    run(tmp_path, f'export model("{pipes}/v2_a/") to "a.safetensors"\n')
    base = load_file(tmp_path / "a.safetensors")
    g = torch.Generator().manual_seed(0)
    lora, want = {}, {k: v.clone() for k, v in base.items()}
    key = TE + "transformer.resblocks.4.attn.in_proj_weight"
    for i, p in enumerate("qkv"):
        name = f"lora_te_text_model_encoder_layers_4_self_attn_{p}_proj"
        up, down = torch.randn(12, 2, generator=g), torch.randn(2, 12, generator=g)
        lora |= {f"{name}.lora_up.weight": up, f"{name}.lora_down.weight": down, f"{name}.alpha": torch.tensor(2.0)}
        want[key][i * 12:(i + 1) * 12] += up @ down
    name = "lora_unet_down_blocks_0_attentions_0_proj_in"
    unet_key = "model.diffusion_model.input_blocks.1.1.proj_in.weight"
    up, down = torch.randn(4, 2, generator=g), torch.randn(2, 4, generator=g)
    lora |= {f"{name}.lora_up.weight": up, f"{name}.lora_down.weight": down, f"{name}.alpha": torch.tensor(2.0)}
    want[unet_key] += up @ down
    save_file(lora, str(tmp_path / "l.safetensors"))
    run(tmp_path, 'let a = model("a.safetensors")\nexport a + lora("l.safetensors", base=a) to "out.safetensors"\n')
    got = load_file(tmp_path / "out.safetensors")
    for k in (key, unet_key):
        torch.testing.assert_close(got[k], want[k])
    assert torch.equal(got[TE + "transformer.resblocks.3.attn.in_proj_weight"], base[TE + "transformer.resblocks.3.attn.in_proj_weight"])


def test_lora_extracted_from_sd2_models_in_kohya_names(pipes, tmp_path):
    """`as lora` writes SD2's text encoder under sd-scripts' names, q/k/v as pieces of in_proj."""
    from safetensors.torch import load_file

    run(tmp_path, f'let a = model("{pipes}/v2_a/")\nlet b = model("{pipes}/v2_b/")\n'
                  f'export b - a to "l.safetensors" as lora(rank=2)\n')
    names = {k.split(".")[0] for k in load_file(tmp_path / "l.safetensors")}
    for p in "qkv":
        assert f"lora_te_text_model_encoder_layers_22_self_attn_{p}_proj" in names
    assert "lora_unet_down_blocks_0_attentions_0_proj_in" in names
    assert not any("layers_23" in n for n in names)
