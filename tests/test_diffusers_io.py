"""Diffusers pipeline folders in and out, end to end, with pipelines made by the `diffusers` library
(tests/diffusers_tiny.py) and outputs loaded back with `from_pretrained`. Every expected tensor is
computed here with torch from the inputs as diffusers itself loads them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

from typer.testing import CliRunner  # noqa: E402

from mechalang import pipeline  # noqa: E402
from mechalang.cli import app  # noqa: E402

from . import diffusers_tiny  # noqa: E402

ALPHA = 0.3


@pytest.fixture(scope="module")
def pipes(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("pipes")
    diffusers_tiny.make("sd1", d / "sd1_a", seed=1)
    diffusers_tiny.make("sd1", d / "sd1_b", seed=2)
    diffusers_tiny.make("sdxl", d / "xl_a", seed=3)
    diffusers_tiny.make("sdxl", d / "xl_b", seed=4)
    return d


def run(folder: Path, text: str) -> pipeline.Planned:
    recipe = folder / "r.mecha"
    recipe.write_text(text)
    planned = pipeline.plan(pipeline.load(recipe))
    assert planned.ok, [(d.code, d.message) for d in planned.diagnostics]
    result = pipeline.execute(planned, threads=2)
    assert result.ok, result
    return planned


def check(folder: Path, text: str):
    recipe = folder / "r.mecha"
    recipe.write_text(text)
    return pipeline.plan(pipeline.load(recipe))


def codes_of(planned) -> set[str]:
    return {d.code for d in planned.diagnostics}


def state_dicts(pipe) -> dict[str, dict]:
    names = [n for n in ("unet", "vae", "text_encoder", "text_encoder_2") if getattr(pipe, n, None) is not None]
    return {n: {k: v.detach().clone() for k, v in getattr(pipe, n).state_dict().items()} for n in names}


def lerp(a: dict, b: dict, alpha: float) -> dict:
    return {f: {k: torch.lerp(a[f][k].float(), b[f][k].float(), alpha) for k in a[f]} for f in a}


def assert_close(got: dict, want: dict, atol=1e-6) -> None:
    for f in want:
        assert set(got[f]) == set(want[f]), (f, sorted(set(got[f]) ^ set(want[f]))[:5])
        for k in want[f]:
            torch.testing.assert_close(got[f][k].float(), want[f][k].float(), atol=atol, rtol=1e-5, msg=f"{f} {k}")


def load_sd1(path, **kw):
    from diffusers import StableDiffusionPipeline

    return StableDiffusionPipeline.from_pretrained(str(path), safety_checker=None, **kw)


def load_sdxl(path, **kw):
    from diffusers import StableDiffusionXLPipeline

    return StableDiffusionXLPipeline.from_pretrained(str(path), **kw)


# ------------------------------------------------------------------------------------------------
# Folders in, folder out


def test_two_sd1_folders_merge_to_a_folder_diffusers_loads(pipes, tmp_path):
    run(tmp_path, f'export weighted_sum(model("{pipes}/sd1_a/"), model("{pipes}/sd1_b/"), alpha={ALPHA}) '
                  f'to "out/" as diffusers\n')
    out = load_sd1(tmp_path / "out")
    want = lerp(state_dicts(load_sd1(pipes / "sd1_a")), state_dicts(load_sd1(pipes / "sd1_b")), ALPHA)
    assert_close(state_dicts(out), want)
    # every non-weight file of the first input, as it was
    for rel in ("model_index.json", "unet/config.json", "tokenizer/vocab.json", "scheduler/scheduler_config.json"):
        assert (tmp_path / "out" / rel).read_bytes() == (pipes / "sd1_a" / rel).read_bytes()
    assert not [p for p in tmp_path.iterdir() if ".mecha-tmp" in p.name]


def test_two_sdxl_folders_merge_with_the_cli(pipes, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(app, ["run", str(write(tmp_path, f'''
let a = model("{pipes}/xl_a/")
let b = model("{pipes}/xl_b/")
export weighted_sum(a, b, alpha={ALPHA}) to "out/" as diffusers(dtype="fp16", variant="fp16")
'''))])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "out" / "unet" / "diffusion_pytorch_model.fp16.safetensors").is_file()
    assert (tmp_path / "out" / "text_encoder_2" / "model.fp16.safetensors").is_file()
    out = load_sdxl(tmp_path / "out", variant="fp16", torch_dtype=torch.float16)
    got = state_dicts(out)
    assert got["unet"]["conv_in.weight"].dtype == torch.float16
    want = lerp(state_dicts(load_sdxl(pipes / "xl_a")), state_dicts(load_sdxl(pipes / "xl_b")), ALPHA)
    want = {f: {k: v.half() for k, v in sd.items()} for f, sd in want.items()}
    assert_close(got, want, atol=0)


def write(folder: Path, text: str) -> Path:
    p = folder / "r.mecha"
    p.write_text(text)
    return p


def test_fused_keys_see_the_whole_tensor(pipes, tmp_path):
    """A method that looks at a whole tensor (TIES keeps each key's top-k by magnitude) gets the
    single-file layout's fused in_proj of CLIP-G whichever format is written: the diffusers q/k/v
    are row slices of the single file's fused result."""
    recipe = f'''
let base = model("{pipes}/xl_a/")
let b = model("{pipes}/xl_b/")
let m = base + ties(b - base, 0.5 * (b - base), density=0.3)
export m to "single.safetensors"
export m to "folder/" as diffusers
'''
    run(tmp_path, recipe)
    from safetensors.torch import load_file

    single = load_file(tmp_path / "single.safetensors")
    te2 = load_file(tmp_path / "folder" / "text_encoder_2" / "model.safetensors")
    fused = single["conditioner.embedders.1.model.transformer.resblocks.7.attn.in_proj_weight"]
    parts = [te2[f"text_model.encoder.layers.7.self_attn.{p}_proj.weight"] for p in "qkv"]
    assert torch.equal(torch.cat(parts), fused)
    assert torch.equal(te2["text_projection.weight"], single["conditioner.embedders.1.model.text_projection"].T)


# ------------------------------------------------------------------------------------------------
# Folders in, single file out: equal to diffusers' own conversion


def test_single_file_from_folders_matches_diffusers_conversion(pipes, tmp_path):
    from diffusers.loaders.single_file_utils import (
        convert_ldm_clip_checkpoint,
        convert_ldm_unet_checkpoint,
        convert_ldm_vae_checkpoint,
    )
    from safetensors.torch import load_file

    run(tmp_path, f'export weighted_sum(model("{pipes}/sd1_a/"), model("{pipes}/sd1_b/"), alpha={ALPHA}) '
                  f'to "merged.safetensors"\n')
    ckpt = load_file(tmp_path / "merged.safetensors")
    a, b = load_sd1(pipes / "sd1_a"), load_sd1(pipes / "sd1_b")
    want = lerp(state_dicts(a), state_dicts(b), ALPHA)
    got = {"unet": convert_ldm_unet_checkpoint(ckpt, dict(a.unet.config)),
           "vae": convert_ldm_vae_checkpoint(ckpt, dict(a.vae.config))}
    # transformers 5 names CLIPTextModel's keys without `text_model.`; the checkpoint has it
    te = convert_ldm_clip_checkpoint(ckpt)
    got["text_encoder"] = {k.removeprefix("text_model."): v for k, v in te.items()}
    want["text_encoder"] = {k.removeprefix("text_model."): v for k, v in want["text_encoder"].items()}
    assert_close(got, want)
    # and the file is an ordinary sd1 checkpoint: detected as such, nothing unknown
    res = CliRunner().invoke(app, ["check", str(write(tmp_path, 'export model("merged.safetensors") to "x.safetensors"'))])
    assert res.exit_code == 0 and "1 model (sd1)" in res.output and "warning" not in res.output, res.output


def test_folder_merged_with_a_single_file_of_the_same_arch(pipes, tmp_path):
    run(tmp_path, f'export model("{pipes}/sd1_b/") to "b.safetensors"\n')
    run(tmp_path, f'export weighted_sum(model("{pipes}/sd1_a/"), model("b.safetensors"), alpha={ALPHA}) '
                  f'to "out/" as diffusers\n')
    want = lerp(state_dicts(load_sd1(pipes / "sd1_a")), state_dicts(load_sd1(pipes / "sd1_b")), ALPHA)
    assert_close(state_dicts(load_sd1(tmp_path / "out")), want)


def test_single_file_written_as_a_folder_with_config(pipes, tmp_path):
    run(tmp_path, f'export model("{pipes}/sd1_b/") to "b.safetensors"\n')
    planned = check(tmp_path, 'export model("b.safetensors") to "out/" as diffusers\n')
    assert "E0290" in codes_of(planned)
    run(tmp_path, f'export model("b.safetensors") to "out/" as diffusers(config="{pipes}/sd1_a/")\n')
    assert_close(state_dicts(load_sd1(tmp_path / "out")), state_dicts(load_sd1(pipes / "sd1_b")))


def test_unet_only_merge_copies_the_other_components(pipes, tmp_path):
    planned = run(tmp_path, f'export weighted_sum(model("{pipes}/sd1_a/").diffuser, model("{pipes}/sd1_b/").diffuser, '
                            f'alpha={ALPHA}) to "out/" as diffusers\n')
    assert "W0291" in codes_of(planned)
    a, b = state_dicts(load_sd1(pipes / "sd1_a")), state_dicts(load_sd1(pipes / "sd1_b"))
    got = state_dicts(load_sd1(tmp_path / "out"))
    assert_close({"unet": got["unet"]}, {"unet": lerp(a, b, ALPHA)["unet"]})
    assert_close({"vae": got["vae"], "text_encoder": got["text_encoder"]},
                 {"vae": a["vae"], "text_encoder": a["text_encoder"]}, atol=0)


# ------------------------------------------------------------------------------------------------
# Input forms: variants, .bin, a component folder, mecha merge and info


def test_fp16_variant_and_bin_inputs(pipes, tmp_path):
    pipe = diffusers_tiny.sd1_pipeline(1).to(torch.float16)
    diffusers_tiny.save_pipeline(pipe, tmp_path / "fp16", variant="fp16")
    assert not (tmp_path / "fp16" / "unet" / "diffusion_pytorch_model.safetensors").exists()
    diffusers_tiny.save_pipeline(diffusers_tiny.sd1_pipeline(2), tmp_path / "bin", safe=False)
    assert (tmp_path / "bin" / "unet" / "diffusion_pytorch_model.bin").exists()
    res = CliRunner().invoke(app, ["check", "-v", str(write(tmp_path, 'export model("fp16/") to "x.safetensors"'))])
    assert res.exit_code == 0 and "variant fp16" in res.output, res.output
    res = CliRunner().invoke(app, ["info", str(tmp_path / "fp16")])
    assert res.exit_code == 0 and "variant fp16" in res.output and "arch: sd1" in res.output, res.output
    run(tmp_path, 'export weighted_sum(model("fp16/"), model("bin/"), alpha=0.5) to "out/" as diffusers\n')
    want = lerp(state_dicts(load_sd1(tmp_path / "fp16", variant="fp16")), state_dicts(load_sd1(tmp_path / "bin")), 0.5)
    assert_close(state_dicts(load_sd1(tmp_path / "out")), want, atol=1e-3)


def test_a_component_folder_alone(pipes, tmp_path):
    run(tmp_path, f'export weighted_sum(model("{pipes}/xl_a/unet"), model("{pipes}/xl_b/unet"), alpha={ALPHA}) '
                  f'to "unet.safetensors"\n')
    from safetensors.torch import load_file

    got = load_file(tmp_path / "unet.safetensors")
    assert all(k.startswith("model.diffusion_model.") for k in got)
    want = lerp(state_dicts(load_sdxl(pipes / "xl_a")), state_dicts(load_sdxl(pipes / "xl_b")), ALPHA)["unet"]
    torch.testing.assert_close(got["model.diffusion_model.label_emb.0.0.weight"], want["add_embedding.linear_1.weight"])


def test_mecha_merge_two_folders_to_a_folder(pipes, tmp_path, monkeypatch):
    """Folders in, a folder out: `mecha merge A/ B/ -o OUT` writes a pipeline diffusers loads; with
    no -o it lands, named by the name rule, in the models folder; `-o x.safetensors` asks for one file."""
    monkeypatch.chdir(tmp_path)
    want = lerp(state_dicts(load_sd1(pipes / "sd1_a")), state_dicts(load_sd1(pipes / "sd1_b")), ALPHA)
    res = CliRunner().invoke(app, ["merge", str(pipes / "sd1_a"), str(pipes / "sd1_b"), "--alpha", str(ALPHA),
                                   "-o", "out"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "out" / "model_index.json").is_file()
    assert_close(state_dicts(load_sd1(tmp_path / "out")), want)
    models = tmp_path / "models"
    models.mkdir()
    for name in ("sd1_a", "sd1_b"):
        shutil.copytree(pipes / name, models / name)
    res = CliRunner().invoke(app, ["merge", "sd1_a", "sd1_b", "--alpha", str(ALPHA), "--models-dir", str(models)])
    assert res.exit_code == 0, res.output
    assert_close(state_dicts(load_sd1(models / f"sd1-a+sd1-b-weighted-sum-{ALPHA:g}")), want)  # `_` is not in the name rule
    res = CliRunner().invoke(app, ["merge", str(pipes / "sd1_a"), str(pipes / "sd1_b"), "-o", "one.safetensors",
                                   "--print-recipe"])
    assert res.exit_code == 0 and res.output.rstrip().endswith('"one.safetensors"'), res.output


def test_check_verbose_says_which_weights(pipes, tmp_path):
    rec = write(tmp_path, f'export model("{pipes}/sd1_a/") to "x.safetensors"\n')
    res = CliRunner().invoke(app, ["check", "-v", str(rec)])
    assert res.exit_code == 0, res.output
    assert "diffusers StableDiffusionPipeline" in res.output, res.output


# ------------------------------------------------------------------------------------------------
# Bad input: a diagnostic naming the file and the problem, nothing written


def copy_pipe(pipes: Path, tmp_path: Path, name="sd1_a") -> Path:
    dest = tmp_path / "broken"
    shutil.copytree(pipes / name, dest)
    return dest


def refused(tmp_path: Path, text: str, *needles: str) -> None:
    planned = check(tmp_path, text)
    msgs = " ".join(d.message + " " + " ".join(d.notes) + (d.help or "") for d in planned.diagnostics if d.is_error)
    assert not planned.ok and all(n in msgs for n in needles), msgs
    assert not (tmp_path / "out").exists()


def test_missing_component_folder(pipes, tmp_path):
    shutil.rmtree(copy_pipe(pipes, tmp_path) / "vae")
    refused(tmp_path, 'export model("broken/") to "out/" as diffusers\n', "vae", "folder is missing")


def test_config_disagreeing_with_weights(pipes, tmp_path):
    folder = copy_pipe(pipes, tmp_path)
    cfg = json.loads((folder / "unet" / "config.json").read_text())
    cfg["block_out_channels"][0] = 320
    (folder / "unet" / "config.json").write_text(json.dumps(cfg))
    refused(tmp_path, 'export model("broken/") to "out/" as diffusers\n', "config.json", "block_out_channels")


def test_sd1_pipeline_whose_unet_config_says_sd2_is_refused(pipes, tmp_path):
    """A StableDiffusionPipeline is SD1 or SD2 by its configs; one whose UNet config says SD2 and
    text encoder config says SD1 is neither (tests/test_diffusers_sd2.py reads real SD2 folders)."""
    folder = copy_pipe(pipes, tmp_path)
    cfg = json.loads((folder / "unet" / "config.json").read_text())
    cfg["use_linear_projection"] = True
    (folder / "unet" / "config.json").write_text(json.dumps(cfg))
    refused(tmp_path, 'export model("broken/") to "out.safetensors"\n', "unet/config.json", "SD2",
            "text_encoder/config.json")


def test_unknown_pipeline_class(pipes, tmp_path):
    folder = copy_pipe(pipes, tmp_path)
    index = json.loads((folder / "model_index.json").read_text())
    # a community pipeline class with exactly SD1's components is SD1
    index["_class_name"] = "StableDiffusionLongPromptWeightingPipeline"
    (folder / "model_index.json").write_text(json.dumps(index))
    assert check(tmp_path, 'export model("broken/") to "out/" as diffusers\n').ok
    index["_class_name"] = "KandinskyPipeline"
    index["prior"] = ["diffusers", "PriorTransformer"]
    (folder / "model_index.json").write_text(json.dumps(index))
    refused(tmp_path, 'export model("broken/") to "out/" as diffusers\n', "unknown pipeline class", "KandinskyPipeline")


def test_component_without_weights(pipes, tmp_path):
    folder = copy_pipe(pipes, tmp_path)
    (folder / "text_encoder" / "model.safetensors").unlink()
    refused(tmp_path, 'export model("broken/") to "out/" as diffusers\n', "text_encoder", "no weights")


def test_output_over_an_input_folder_is_refused(pipes, tmp_path):
    folder = copy_pipe(pipes, tmp_path)
    before = sorted(p.name for p in folder.rglob("*"))
    planned = check(tmp_path, 'export model("broken/") to "broken/" as diffusers\n')
    assert "E0241" in codes_of(planned)
    assert sorted(p.name for p in folder.rglob("*")) == before


def test_output_path_naming_a_file(pipes, tmp_path):
    planned = check(tmp_path, f'export model("{pipes}/sd1_a/") to "out.safetensors" as diffusers\n')
    assert "E0280" in codes_of(planned)


# ------------------------------------------------------------------------------------------------
# SD3 and Flux: the transformer of a pipeline, read and written back (fused qkv / linear1 rows, the
# AdaLN halves diffusers swaps, SD3's last text block)


def _transformer(arch: str):
    from diffusers import FluxTransformer2DModel, SD3Transformer2DModel

    from mechalang.archs.registry import STDLIB_DIR, load_inventory

    inv = load_inventory(STDLIB_DIR / f"{arch}.json")[0]
    if arch == "sd3":
        n = len({k.split(".")[3] for k in inv if "joint_blocks" in k})
        return SD3Transformer2DModel(sample_size=8, patch_size=2, in_channels=4, num_layers=n, attention_head_dim=4,
                                     num_attention_heads=2, joint_attention_dim=8, caption_projection_dim=8,
                                     pooled_projection_dim=8, out_channels=4, pos_embed_max_size=8), "StableDiffusion3Pipeline"
    nd = len({k.split(".")[3] for k in inv if "double_blocks" in k})
    ns = len({k.split(".")[3] for k in inv if "single_blocks" in k})
    return FluxTransformer2DModel(patch_size=1, in_channels=4, num_layers=nd, num_single_layers=ns, attention_head_dim=4,
                                  num_attention_heads=2, joint_attention_dim=8, pooled_projection_dim=8,
                                  guidance_embeds=True, axes_dims_rope=(0, 2, 2)), "FluxPipeline"


@pytest.mark.parametrize("arch", ["sd3", "flux"])
def test_transformer_pipelines_round_trip(arch, tmp_path):
    model, cls = _transformer(arch)
    diffusers_tiny._randomize(model, 7)
    pipe = tmp_path / "pipe"
    model.save_pretrained(str(pipe / "transformer"))
    index = {"_class_name": cls, "_diffusers_version": "0.42.1", "transformer": ["diffusers", type(model).__name__],
             "vae": [None, None], "text_encoder": [None, None]}
    (pipe / "model_index.json").write_text(json.dumps(index))
    run(tmp_path, 'let m = model("pipe/")\nexport m to "single.safetensors"\nexport m to "out/" as diffusers\n')
    # written back as diffusers: the same tensors, loadable by the model class
    again = type(model).from_pretrained(str(tmp_path / "out" / "transformer"))
    want = model.state_dict()
    for k, v in again.state_dict().items():
        assert torch.equal(v, want[k]), k
    # and the single file holds the BFL/SAI layout: halves swapped back, pieces fused
    from safetensors.torch import load_file

    single = load_file(tmp_path / "single.safetensors")
    shift, scale = want["norm_out.linear.weight"].chunk(2)
    assert torch.equal(single["model.diffusion_model.final_layer.adaLN_modulation.1.weight"], torch.cat([scale, shift]))
    if arch == "sd3":
        last = len({k.split(".")[1] for k in want if k.startswith("transformer_blocks.")}) - 1
        shift, scale = want[f"transformer_blocks.{last}.norm1_context.linear.bias"].chunk(2)
        got = single[f"model.diffusion_model.joint_blocks.{last}.context_block.adaLN_modulation.1.bias"]
        assert torch.equal(got, torch.cat([scale, shift]))
        assert torch.equal(single["model.diffusion_model.joint_blocks.0.context_block.adaLN_modulation.1.bias"],
                           want["transformer_blocks.0.norm1_context.linear.bias"])
    else:
        parts = [want[f"single_transformer_blocks.3.attn.to_{x}.bias"] for x in "qkv"]
        parts.append(want["single_transformer_blocks.3.proj_mlp.bias"])
        assert torch.equal(single["model.diffusion_model.single_blocks.3.linear1.bias"], torch.cat(parts))


def test_a_failed_run_leaves_no_folder(pipes, tmp_path):
    folder = copy_pipe(pipes, tmp_path)
    recipe = write(tmp_path, 'export weighted_sum(model("broken/"), model("broken/"), alpha=0.5) to "out/" as diffusers\n')
    planned = pipeline.plan(pipeline.load(recipe))
    assert planned.ok
    weights = folder / "vae" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-4])  # the input changes after it was checked
    result = pipeline.execute(planned, threads=2)
    assert not result.ok
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken", "r.mecha"]


def test_components_no_merge_touches_are_copied_whole(pipes, tmp_path):
    """A safety checker (listed in model_index.json, weights of its own) is neither merged nor
    dropped: the output carries the config pipeline's folder as it is, weights included."""
    folder = copy_pipe(pipes, tmp_path)
    index = json.loads((folder / "model_index.json").read_text())
    index["safety_checker"] = ["stable_diffusion", "StableDiffusionSafetyChecker"]
    (folder / "model_index.json").write_text(json.dumps(index))
    (folder / "safety_checker").mkdir()
    (folder / "safety_checker" / "config.json").write_text("{}")
    (folder / "safety_checker" / "model.safetensors").write_bytes(b"not merged, copied")
    run(tmp_path, 'export model("broken/") to "out/" as diffusers\n')
    assert (tmp_path / "out" / "safety_checker" / "model.safetensors").read_bytes() == b"not merged, copied"
    assert (tmp_path / "out" / "safety_checker" / "config.json").is_file()


def test_the_forms_write_a_folder_for_folder_inputs(pipes, tmp_path):
    """The TUI's and the web page's form (commands/quick_form.py): diffusers folders in, a pipeline
    folder out, as `mecha merge` does; with block weights too."""
    from mechalang.commands.catalog import scan
    from mechalang.commands.quick_form import FormState, check_form, recipe_text

    models = tmp_path / "models"
    models.mkdir()
    for name in ("sd1_a", "sd1_b"):
        shutil.copytree(pipes / name, models / name)
    entries = {e.name: e for e in scan(models)}
    assert entries["sd1_a"].kind == "diffusers"
    s = FormState(models, models=["sd1_a", "sd1_b", None], alpha=ALPHA, arch="sd1", first_kind=entries["sd1_a"].kind,
                  blocks={"IN00": 0.0})
    assert s.folder_format == "diffusers" and s.out_name == f"sd1-a+sd1-b-weighted-sum-{ALPHA:g}"
    text = recipe_text(s)
    assert text.rstrip().endswith(f'{s.out_name}/" as diffusers()'), text
    r = check_form(s)
    assert r.ok, r.lines
    result = pipeline.execute(pipeline.plan(r.program), threads=2)
    assert result.ok, result
    assert (models / s.out_name / "model_index.json").is_file()
    got = state_dicts(load_sd1(models / s.out_name))
    want = lerp(state_dicts(load_sd1(pipes / "sd1_a")), state_dicts(load_sd1(pipes / "sd1_b")), ALPHA)
    assert_close({"vae": got["vae"]}, {"vae": want["vae"]})  # block weights touch the UNet only


def test_per_component_dtypes_in_a_folder(pipes, tmp_path):
    """`as diffusers(dtype={vae: fp32, default: fp16})`: the VAE's files in float32, the rest in
    float16, each equal to the merge computed from the pipelines diffusers loads."""
    run(tmp_path, f'export weighted_sum(model("{pipes}/sd1_a/"), model("{pipes}/sd1_b/"), alpha={ALPHA}) '
                  f'to "out/" as diffusers(dtype={{vae: fp32, default: fp16}})\n')
    got = state_dicts(load_sd1(tmp_path / "out"))
    want = lerp(state_dicts(load_sd1(pipes / "sd1_a")), state_dicts(load_sd1(pipes / "sd1_b")), ALPHA)
    from safetensors.torch import load_file

    for folder in ("unet", "vae", "text_encoder"):
        stored = load_file(str(next((tmp_path / "out" / folder).glob("*.safetensors"))))
        dtype = torch.float32 if folder == "vae" else torch.float16
        assert {v.dtype for v in stored.values() if v.is_floating_point()} == {dtype}, folder
        for k, v in stored.items():
            if v.is_floating_point():  # transformers' state_dict may leave out `text_model.`
                w = want[folder].get(k, want[folder].get(k.removeprefix("text_model.")))
                torch.testing.assert_close(v, w.to(dtype), rtol=0, atol=0, msg=f"{folder}/{k}")
    assert got.keys() == want.keys()
