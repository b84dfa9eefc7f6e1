"""Recipes written by sd-mecha 1.1 itself (tests/sdmecha_corpus/, made by make_corpus.py there) run
unchanged: `mecha check` and `mecha run` on each, and the output compared with sd-mecha's own merge
of the same small models (`expected.json`), or, where sd-mecha could not merge, with a torch
computation of the formula. Methods mechalang has no exact equivalent for are refused with E0930."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from mechalang.commands.check import check_command
from mechalang.commands.run import run_command
from mechalang.compat.sdmecha import read_sdmecha

from .sdmecha_corpus.models import write_corpus_models

CORPUS = Path(__file__).parent / "sdmecha_corpus"
FILES = sorted(p for p in CORPUS.glob("*.mecha") if not p.name.startswith("v0_"))
EXPECTED = json.loads((CORPUS / "expected.json").read_text())

# corpus recipe → what mechalang refuses in it (E0930): the method, and the setting if only that
UNSUPPORTED = {
    "slerp": "slerp",
    "slerp_blocks": "slerp",
    "ties_sum": "ties_sum` with k=0.5",
    "ties_sum_vote_sgn": "ties_sum` with k=0.3",
    "ties_sum_keep_all": "ties_sum` with vote_sgn=false",
    "add_opposite_mask": "add_opposite_mask",
    "add_strict_opposite_mask": "add_strict_opposite_mask",
    "add_ties_with_dare": "ties_sum_with_dropout",
    "balance_attention_sdxl": "balance_attention_sdxl_sgm",
    "cast": "cast",
    "dropout": "dropout",
    "exchange_ema": "exchange_ema_'sd1-ldm'",
    "model_stock": "model_stock",
    "multiply_quotient": "multiply_quotient",
    "n_model_stock": "model_stock",
    "omit_non_finite": "omit_non_finite",
    "randperm_sdxl": "randperm_sdxl_sgm",
    "rebasin_sdxl": "rebasin_sdxl_sgm",
    "stack": "stack",
    "ties_sum_extended": "ties_sum_extended",
    "ties_sum_with_dropout": "ties_sum_with_dropout",
    "train_difference_mask": "train_difference_mask",
    "truncate_kronecker": "truncate_kronecker",
    "truncate_rank": "truncate_rank",
}
RUNNABLE = [p for p in FILES if p.stem not in UNSUPPORTED]
def params(paths):
    return [pytest.param(p, id=p.stem) for p in paths]


@pytest.fixture(scope="module")
def corpus_models(tmp_path_factory) -> Path:
    return write_corpus_models(tmp_path_factory.mktemp("corpus_models"))


def test_the_corpus_has_a_recipe_for_each_method_and_every_file_is_classified():
    assert len(FILES) >= 50
    assert set(UNSUPPORTED) <= {p.stem for p in FILES}
    methods = {m for p in FILES for m in re.findall(r'^merge "([^"]+)"', p.read_text(), re.M)}
    # every builtin sd-mecha 1.1 method usable on sd1/sdxl/LoRA models (conversions aside)
    for name in ("weighted_sum", "n_average", "slerp", "add_difference", "subtract", "scale",
                 "perpendicular_component", "geometric_sum", "add_opposite_mask",
                 "add_strict_opposite_mask", "multiply_quotient", "add_cosine_a", "add_cosine_b",
                 "crossover", "tensor_sum", "top_k_tensor_sum", "ties_sum", "ties_sum_extended",
                 "ties_sum_with_dropout", "dropout", "model_stock", "geometric_median", "rotate",
                 "truncate_rank", "truncate_kronecker", "clamp", "fallback", "pick_component",
                 "omit_component", "cast", "omit_non_finite", "stack", "convert_singleton",
                 "convert_sd1_blocks_to_ldm", "convert_sdxl_blocks_to_sgm"):
        assert name in methods, name


def test_corpus_recipes_were_written_by_sd_mecha():
    for p in FILES:
        text = p.read_text()
        assert text.startswith("version 0.1.0\n"), p.name
        assert "/tmp" not in text and "\\" not in text, p.name


@pytest.mark.parametrize("path", params(RUNNABLE))
def test_corpus_recipe_checks_and_runs(path: Path, corpus_models: Path, tmp_path: Path, capsys):
    assert check_command(str(path), models_dir=str(corpus_models)) == 0, capsys.readouterr().err
    out = tmp_path / "out.safetensors"
    code = run_command(str(path), output=str(out), models_dir=str(corpus_models), threads=1)
    assert code == 0, capsys.readouterr().err
    assert out.exists()
    merged = load_file(str(out))
    if path.stem in EXPECTED:
        compare_with_sd_mecha(merged, EXPECTED[path.stem])
    elif path.stem.startswith("lora"):
        compare_lora(merged, corpus_models, alpha=0.8 if path.stem == "lora" else 1.0)


def compare_with_sd_mecha(merged: dict[str, torch.Tensor], expected: dict) -> None:
    """Every element of the probe keys, and the sums over the whole model, as sd-mecha computed
    them (float64, then float32); mechalang's output is float16 like its inputs."""
    for key, values in expected["values"].items():
        want = torch.tensor(values, dtype=torch.float64)
        got = merged[key].double().flatten()[:len(want)]
        torch.testing.assert_close(got, want, rtol=2e-3, atol=2e-3, msg=lambda m, key=key: f"{key}: {m}")
    finite = [t.double() for k, t in merged.items() if k not in expected["nonfinite"]]
    total = sum(float(t.sum()) for t in finite)
    total_abs = sum(float(t.abs().sum()) for t in finite)
    assert total == pytest.approx(expected["sum"], rel=1e-3, abs=0.5)
    assert total_abs == pytest.approx(expected["abs_sum"], rel=1e-3)


def compare_lora(merged: dict[str, torch.Tensor], models: Path, alpha: float) -> None:
    """sd-mecha 1.1.8 cannot merge its own LoRA recipes (a bug in its kohya conversion), so the
    reference is the kohya formula: W + α·(alpha/rank)·up·down, on one attention weight."""
    base = load_file(str(models / "a.safetensors"))
    lora = load_file(str(models / "lora_a.safetensors"))
    module = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k"
    key = "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight"
    up, down = lora[f"{module}.lora_up.weight"].double(), lora[f"{module}.lora_down.weight"].double()
    scale = float(lora[f"{module}.alpha"]) / down.shape[0]
    want = base[key].double() + alpha * scale * (up @ down)
    torch.testing.assert_close(merged[key].double(), want, rtol=2e-3, atol=2e-3)
    untouched = "first_stage_model.decoder.conv_in.weight"
    assert torch.equal(merged[untouched], base[untouched])


@pytest.mark.parametrize("path", [CORPUS / f"{n}.mecha" for n in UNSUPPORTED], ids=list(UNSUPPORTED))
def test_methods_without_an_exact_equivalent_are_refused_by_name(path: Path):
    module, diags = read_sdmecha(path.read_text(), str(path))
    assert module is None
    [d] = [d for d in diags if d.is_error]
    assert d.code == "E0930"
    what = UNSUPPORTED[path.stem]
    assert d.message == f"sd-mecha's `{what}{'' if '`' in what else '`'} has no exact mechalang equivalent"
    assert d.help


def test_extensionless_names_are_passed_through_unchanged():
    module, diags = read_sdmecha((CORPUS / "extensionless_weighted_sum.mecha").read_text(), "r.mecha")
    assert module is not None and not [d for d in diags if d.is_error]
    from mechalang.syntax.printer import print_module

    text = print_module(module)
    assert 'model("a", arch=sd1)' in text and 'model("b", arch=sd1)' in text


def test_scalar_hyperparameters_are_singletons_and_are_read_as_values():
    text = (CORPUS / "weighted_sum.mecha").read_text()
    assert 'model_config="singleton-mecha"' in text and 'merge "convert_singleton"' in text
    module, _ = read_sdmecha(text, "weighted_sum.mecha")
    from mechalang.syntax.printer import print_module

    assert print_module(module).endswith("export weighted_sum(a, b, alpha=0.3) to out\n")


# ------------------------------------------------------------------------------------------------
# sd-mecha's pre-1.0 format (hand-made files, see sdmecha_corpus/README.md)

V0 = sorted(CORPUS.glob("v0_*.mecha"))


def test_there_are_pre_1_0_recipes():
    assert {p.stem for p in V0} >= {"v0_weighted_sum", "v0_call_lines", "v0_block_dict",
                                    "v0_lora_and_parameter", "v0_ties"}


@pytest.mark.parametrize("path", [pytest.param(p, id=p.stem) for p in V0])
def test_pre_1_0_recipe_runs(path: Path, corpus_models: Path, tmp_path: Path, capsys):
    sets = ["base=a.safetensors"] if "parameter" in path.stem else []
    out = tmp_path / "out.safetensors"
    code = run_command(str(path), sets=sets, output=str(out), models_dir=str(corpus_models), threads=1)
    assert code == 0, capsys.readouterr().err
    merged = load_file(str(out))
    m = {n: load_file(str(corpus_models / f"{n}.safetensors")) for n in "abc"}
    key = "model.diffusion_model.input_blocks.4.0.in_layers.2.weight"
    te = "cond_stage_model.transformer.text_model.encoder.layers.3.self_attn.q_proj.weight"
    a, b, c = (m[n][key].double() for n in "abc")
    close = dict(rtol=2e-3, atol=2e-3)
    if path.stem == "v0_weighted_sum":
        torch.testing.assert_close(merged[key].double(), 0.7 * a + 0.3 * b, **close)
    elif path.stem == "v0_call_lines":
        torch.testing.assert_close(merged[key].double(), a + 0.5 * (b - c), **close)
    elif path.stem == "v0_block_dict":  # sd1_unet_block_in3=0.1 is IN03; IN04 has the UNet default
        torch.testing.assert_close(merged[key].double(), 0.5 * a + 0.5 * b, **close)
        k3 = "model.diffusion_model.input_blocks.3.0.op.weight"
        torch.testing.assert_close(merged[k3].double(),
                                   0.9 * m["a"][k3].double() + 0.1 * m["b"][k3].double(), **close)
        torch.testing.assert_close(merged[te].double(),
                                   0.8 * m["a"][te].double() + 0.2 * m["b"][te].double(), **close)
    elif path.stem == "v0_lora_and_parameter":
        compare_lora(merged, corpus_models, alpha=0.8)
    elif path.stem == "v0_ties":  # k=1, sum vote, disjoint mean of b − a and c − a
        d1, d2 = b - a, c - a
        sign = torch.sign(d1 + d2)
        keep1, keep2 = (torch.sign(d1) == sign).double(), (torch.sign(d2) == sign).double()
        want = a + torch.nan_to_num((d1 * keep1 + d2 * keep2) / (keep1 + keep2))
        torch.testing.assert_close(merged[key].double(), want, **close)
