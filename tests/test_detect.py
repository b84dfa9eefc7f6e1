"""Architecture detection from a file's header, on synthetic models with the real key names."""

from __future__ import annotations

import pytest

from mechalang.archs import registry
from mechalang.archs.detect import describe_poor_match, detect, detect_keys
from mechalang.archs.header import read_header
from mechalang.synth import make_model


@pytest.fixture(autouse=True)
def _no_user_path(monkeypatch):
    # the registry reloads by itself whenever MECHA_PATH changes
    monkeypatch.delenv("MECHA_PATH", raising=False)


def detect_file(path):
    return detect(read_header(str(path)))


@pytest.mark.parametrize("arch", ["sd1", "sd2", "sdxl", "sd3", "flux", "sd1-kohya", "sdxl-kohya",
                                  "sdxl-diffusers-unet", "llama", "bert"])
def test_detects_synthetic_models(tmp_path, arch):
    p = tmp_path / f"{arch}.safetensors"
    make_model(arch, p, dim_cap=2, layers=3)
    d = detect_file(p)
    assert d.arch.name == arch
    assert d.confident
    best = d.candidates[0]
    assert best.arch.name == arch and best.missing == 0 and best.extra == 0


@pytest.mark.parametrize("arch", ["sd1", "sd2"])
def test_sd1_and_sd2_told_apart_from_headers(tmp_path, arch):
    """Whole checkpoints differ by their text encoders' names; UNet-only files have the same LDM
    names in both, and are told apart by the ranks of proj_in/proj_out (SD2: linear)."""
    whole, unet = tmp_path / "whole.safetensors", tmp_path / "unet.safetensors"
    make_model(arch, whole, dim_cap=2, optional=False)
    keys = make_model(arch, unet, dim_cap=2, optional=False, drop=["cond_stage_model.*", "first_stage_model.*"])
    assert all(k.startswith("model.diffusion_model.") for k in keys)
    for p in (whole, unet):
        d = detect_file(p)
        assert d.arch.name == arch and d.confident, (p.name, [(c.arch.name, c.score) for c in d.candidates[:3]])
    other = "sd2" if arch == "sd1" else "sd1"
    by_name = {c.arch.name: c for c in detect_file(unet).candidates}
    assert by_name[arch].matched == by_name[other].matched  # names alone explain the same keys ...
    assert by_name[arch].same_rank == by_name[arch].matched > by_name[other].same_rank  # ... ranks do not
    # without shapes (names only) a UNet is SD1's, whose text encoder leaves fewer keys missing
    assert detect_keys(list(keys)).arch.name == "sd1"
    # the commands that show a file's architecture pass its shapes
    from .cli_util import mecha

    for command in ("info", "show"):
        r = mecha(command, str(unet), cwd=tmp_path)
        assert r.exit_code == 0 and (f"arch: {arch}" in r.output or f": {arch}," in r.output), r.output


def test_sd1_without_optional_keys_is_confident(tmp_path):
    p = tmp_path / "m.safetensors"
    make_model("sd1", p, dim_cap=2, drop=["model_ema.*", "alphas_*", "betas", "sqrt_*",
                                          "posterior_*", "log_one_*", "*.position_ids"])
    d = detect_file(p)
    assert d.arch.name == "sd1" and d.confident
    assert (d.candidates[0].matched, d.candidates[0].missing) == (1130, 0)


def test_sd1_with_old_text_encoder_names(tmp_path):
    p = tmp_path / "old.safetensors"
    keys = make_model("sd1", p, dim_cap=2, use_aliases="cond_stage_model.*")
    assert "cond_stage_model.transformer.embeddings.token_embedding.weight" in keys
    assert not any(k.startswith("cond_stage_model.transformer.text_model") for k in keys)
    d = detect_file(p)
    assert d.arch.name == "sd1" and d.confident and d.candidates[0].extra == 0


def test_flux_transformer_alone_with_bare_names(tmp_path):
    p = tmp_path / "flux1-dev.safetensors"
    make_model("flux", p, dim_cap=2, use_aliases=True,
               drop=["text_encoders.*", "vae.*"])
    d = detect_file(p)
    assert d.arch.name == "flux" and d.confident  # the diffuser component is complete
    c = d.candidates[0]
    assert (c.matched, c.extra, c.missing) == (780, 0, 659)
    assert c.complete_components == ("diffuser",)


def test_sdxl_unet_only_single_file_is_sdxl(tmp_path):
    p = tmp_path / "unet.safetensors"
    make_model("sdxl", p, dim_cap=2, drop=["conditioner.*", "first_stage_model.*"])
    d = detect_file(p)
    assert d.arch.name == "sdxl" and d.confident


def test_llama_detection_specializes_the_blocks(tmp_path):
    p = tmp_path / "llm.safetensors"
    make_model("llama", p, layers=12)
    d = detect_file(p)
    assert d.arch.name == "llama" and d.arch.specialized
    assert d.arch.blocks == ("EMBED", *[f"L{i}" for i in range(12)], "NORM", "HEAD")


def test_unknown_model_is_generic(tmp_path):
    keys = [f"blocks.{i}.linear.weight" for i in range(4)] + ["head.weight"]
    d = detect_keys(keys)
    assert d.arch.name == "generic" and not d.confident
    assert d.arch.blocks == ("blocks.0", "blocks.1", "blocks.2", "blocks.3")
    text = describe_poor_match(d)
    assert text == ("no architecture matches this file's 5 keys; it is treated as `generic` "
                    "(blocks from numbered key segments)")


def test_partial_match_is_not_confident_and_explained(tmp_path):
    sd1 = registry.get_arch("sd1")
    keys = [k for k in sd1.expected_keys() if k.startswith("model.diffusion_model.")][:600]
    keys += [f"junk.{i}.weight" for i in range(100)]
    d = detect_keys(keys)
    assert d.arch.name == "sd1" and not d.confident
    text = describe_poor_match(d)
    assert text.startswith("the file was taken as `sd1`, but the match is poor; closest: "
                           "`sd1` matches 600 of the file's 700 keys, misses 530 of its 1130 "
                           "required keys, does not know 100")


def test_mostly_foreign_keys_fall_back_to_generic():
    sd1 = registry.get_arch("sd1")
    keys = sorted(sd1.expected_keys())[:50] + [f"other.{i}.w" for i in range(200)]
    d = detect_keys(keys)
    assert d.arch.name == "generic" and not d.confident
    assert d.candidates[0].arch.name == "sd1" and d.candidates[0].matched == 50
    assert "closest: `sd1` matches 50 of the file's 250 keys" in describe_poor_match(d)


def test_sd1_and_sdxl_share_names_but_are_told_apart():
    # Many UNet and VAE key names are the same in SD1 and SDXL; coverage decides.
    for name, other in (("sd1", "sdxl"), ("sdxl", "sd1")):
        a = registry.get_arch(name)
        d = detect_keys(sorted(a.expected_keys()))
        assert d.arch.name == name
        assert any(c.arch.name == other and c.matched > 500 for c in d.candidates)
