"""SD3 and Flux pipelines end to end, text encoders included: folders made with the `diffusers` and
`transformers` libraries (tests/diffusers_tiny.py: the real component classes and block counts,
CLIP-L, OpenCLIP-G and a T5 encoder at a few channels), merged by mecha, written back as a folder
that `from_pretrained` loads and as a single file that diffusers' own single-file converters read
back, key by key."""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

from typer.testing import CliRunner  # noqa: E402

from mechalang.cli import app  # noqa: E402

from . import diffusers_tiny  # noqa: E402
from .test_diffusers_io import assert_close, lerp, run, write  # noqa: E402

ALPHA = 0.3
COMPONENTS = {"sd3": ("transformer", "vae", "text_encoder", "text_encoder_2", "text_encoder_3"),
              "flux": ("transformer", "vae", "text_encoder", "text_encoder_2")}


@pytest.fixture(scope="module")
def pipes(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("dit")
    for kind in COMPONENTS:
        diffusers_tiny.make(kind, d / f"{kind}_a", seed=1)
        diffusers_tiny.make(kind, d / f"{kind}_b", seed=2)
    return d


def load(kind: str, path: Path):
    from diffusers import FluxPipeline, StableDiffusion3Pipeline

    if kind == "sd3":  # the T5 tokenizer and the IP-adapter parts are not made by the tiny pipelines
        return StableDiffusion3Pipeline.from_pretrained(str(path), tokenizer_3=None, feature_extractor=None,
                                                        image_encoder=None)
    return FluxPipeline.from_pretrained(str(path), tokenizer_2=None)


def state_dicts(kind: str, pipe) -> dict[str, dict]:
    # transformers 5 names CLIPTextModel's keys with or without `text_model.`; compare without
    return {n: {k.removeprefix("text_model."): v.detach().clone() for k, v in getattr(pipe, n).state_dict().items()}
            for n in COMPONENTS[kind]}


def expected(kind: str, pipes: Path) -> dict:
    a, b = (state_dicts(kind, load(kind, pipes / f"{kind}_{x}")) for x in "ab")
    return lerp(a, b, ALPHA)


@pytest.mark.parametrize("kind", list(COMPONENTS))
def test_folders_merge_to_a_folder_diffusers_loads(kind, pipes, tmp_path):
    planned = run(tmp_path, f'export weighted_sum(model("{pipes}/{kind}_a/"), model("{pipes}/{kind}_b/"), '
                            f'alpha={ALPHA}) to "out/" as diffusers\n')
    assert not [d for d in planned.diagnostics if d.is_error]
    assert_close(state_dicts(kind, load(kind, tmp_path / "out")), expected(kind, pipes))


@pytest.mark.parametrize("kind", list(COMPONENTS))
def test_single_file_from_folders_matches_diffusers_conversion(kind, pipes, tmp_path):
    from diffusers.loaders.single_file_utils import (
        convert_ldm_clip_checkpoint,
        convert_ldm_vae_checkpoint,
        convert_sd3_t5_checkpoint_to_diffusers,
        convert_sd3_transformer_checkpoint_to_diffusers,
    )
    from safetensors.torch import load_file

    run(tmp_path, f'export weighted_sum(model("{pipes}/{kind}_a/"), model("{pipes}/{kind}_b/"), alpha={ALPHA}) '
                  f'to "merged.safetensors"\n')
    ckpt = load_file(tmp_path / "merged.safetensors")
    want = expected(kind, pipes)
    t5 = "text_encoder_3" if kind == "sd3" else "text_encoder_2"
    got = {"text_encoder": convert_ldm_clip_checkpoint(ckpt, "text_encoders.clip_l.transformer."),
           "vae": convert_ldm_vae_checkpoint(ckpt, dict(load(kind, pipes / f"{kind}_a").vae.config)),
           t5: convert_sd3_t5_checkpoint_to_diffusers(ckpt)}
    if kind == "sd3":
        got["text_encoder_2"] = convert_ldm_clip_checkpoint(ckpt, "text_encoders.clip_g.transformer.")
        got["transformer"] = convert_sd3_transformer_checkpoint_to_diffusers(dict(ckpt))
    else:  # diffusers' Flux converter assumes the full width (3072); test_diffusers_io checks the transformer
        del want["transformer"]
    # T5's input embedding is tied to `shared`: one tensor in a file, two names in the state dict
    del want[t5]["encoder.embed_tokens.weight"]
    got = {n: {k.removeprefix("text_model."): v for k, v in sd.items()} for n, sd in got.items()}
    assert_close(got, want)
    res = CliRunner().invoke(app, ["check", str(write(tmp_path, 'export model("merged.safetensors") to "x.safetensors"'))])
    assert res.exit_code == 0 and f"1 model ({kind})" in res.output and "warning" not in res.output, res.output


@pytest.mark.parametrize("kind", list(COMPONENTS))
def test_single_file_written_back_as_a_folder(kind, pipes, tmp_path):
    """Folder -> single file -> folder: every component, text encoders included, as it was."""
    run(tmp_path, f'export model("{pipes}/{kind}_b/") to "b.safetensors"\n')
    run(tmp_path, f'export model("b.safetensors") to "out/" as diffusers(config="{pipes}/{kind}_a/")\n')
    assert_close(state_dicts(kind, load(kind, tmp_path / "out")), state_dicts(kind, load(kind, pipes / f"{kind}_b")),
                 atol=0)
