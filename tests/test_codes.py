"""The registry of diagnostic codes: one meaning per code, every code explained, every example in
an explanation producing its own code, and docs/diagnostics.md generated from it."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mechalang import pipeline
from mechalang.cli import app
from mechalang.commands.explain_code import markdown_reference
from mechalang.diagnostics import codes
from mechalang.diagnostics.codes import CodeRegistry, DuplicateCode
from mechalang.diagnostics.explanations import EXPLANATIONS

ROOT = Path(__file__).parent.parent
PACKAGE = ROOT / "mechalang"
REGISTRY_FILES = {PACKAGE / "diagnostics" / "codes.py", PACKAGE / "diagnostics" / "explanations.py"}
EXAMPLE = re.compile(r"^```(mecha|sdmecha)\n(.*?)^```", re.S | re.M)


def test_a_code_cannot_have_two_meanings():
    reg = CodeRegistry()
    reg.define("E0001", "first-thing", "the first meaning")
    with pytest.raises(DuplicateCode, match="E0001 is already defined as 'first-thing'"):
        reg.define("E0001", "second-thing", "another meaning")
    with pytest.raises(DuplicateCode, match="already used by E0001"):
        reg.define("E0002", "first-thing", "the same name again")
    with pytest.raises(ValueError):
        reg.define("X12", "bad-id", "not a code")


def test_the_registry_has_unique_ids_and_names():
    all_codes = codes.CODES.all()
    assert len({c.id for c in all_codes}) == len({c.name for c in all_codes}) == len(all_codes) > 100
    constants = [v for v in vars(codes).values() if isinstance(v, codes.Code)]
    assert sorted(c.id for c in constants) == sorted(c.id for c in all_codes)


def literal_codes(source: str) -> list[str]:
    return re.findall(r"""["']([EW]\d{4})["']""", source)


def test_no_module_writes_a_code_as_a_literal():
    found = {str(p.relative_to(ROOT)): literal_codes(p.read_text(encoding="utf-8"))
             for p in PACKAGE.rglob("*.py") if p not in REGISTRY_FILES}
    assert {k: v for k, v in found.items() if v} == {}


def test_the_literal_check_catches_a_literal():
    assert literal_codes('error("E0101", "unexpected character")') == ["E0101"]
    assert literal_codes("error(codes.UNEXPECTED_CHARACTER, 'x')") == []


def test_diagnostics_can_only_use_registered_codes():
    from mechalang.diagnostics import error

    with pytest.raises(TypeError):
        error("E0101", "a string is not a code")  # type: ignore[arg-type]
    assert error(codes.UNDEFINED_NAME, "x").code == "E0401"


def test_every_code_is_explained():
    assert set(EXPLANATIONS) == {c.id for c in codes.CODES.all()}
    for cid, text in EXPLANATIONS.items():
        assert len(text.strip()) > 80, cid


@pytest.fixture(scope="module")
def example_dir(tmp_path_factory):
    from mechalang.synth import make_model

    d = tmp_path_factory.mktemp("explanations")
    for name, arch, seed in (("sd1_a", "sd1", 1), ("sd1_b", "sd1", 2), ("sd1_c", "sd1", 3),
                             ("sdxl_a", "sdxl", 5), ("sdxl_b", "sdxl", 6)):
        make_model(arch, d / f"{name}.safetensors", dim_cap=4, dtype="float16", seed=seed)
    write_adapters(d)
    write_pipeline(d)
    return d


def write_pipeline(d: Path) -> None:
    """The tiny SD1 diffusers pipeline folder the diffusers codes' examples (W0290, W0291) name."""
    from .diffusers_tiny import make

    make("sd1", d / "sd1_pipe")


def write_adapters(d: Path) -> None:
    """The LoRA files the adapter codes' examples (E0270-W0275) name, made from the models above."""
    import torch
    from safetensors.torch import load_file, save_file

    from mechalang.synth import make_lora, make_model

    make_lora(d / "sd1_a.safetensors", d / "sd1_lora.safetensors", rank=2, seed=1)
    make_lora(d / "sdxl_a.safetensors", d / "sdxl_lora.safetensors", rank=2, seed=2)
    lora = load_file(d / "sd1_lora.safetensors")
    # W0275: a LoRA saved without its `alpha` tensors
    save_file({k: v for k, v in lora.items() if not k.endswith(".alpha")}, d / "sd1_lora_no_alpha.safetensors")
    # E0272: a DoRA (a `dora_scale` magnitude per output row of every module)
    dora = dict(lora)
    for k, v in lora.items():
        if k.endswith(".lora_up.weight"):
            dora[k.replace(".lora_up.weight", ".dora_scale")] = torch.ones(v.shape[0], 1, dtype=v.dtype)
    save_file(dora, d / "sd1_dora.safetensors")
    # E0271: a LoRA trained on a wider SD1 model (dimensions 8 instead of 4)
    make_model("sd1", d / "sd1_wide.safetensors", dim_cap=8, dtype="float16", seed=4)
    make_lora(d / "sd1_wide.safetensors", d / "sd1_lora_wide.safetensors", rank=2, seed=3)
    # E0273: PEFT names (`base_model.model.…`, lora_A/lora_B) without the adapter_config.json
    make_lora(d / "sd1_a.safetensors", d / "native.tmp", rank=2, seed=5, dialect="native")
    peft = {}
    for k, v in load_file(d / "native.tmp").items():
        for old, new in ((".lora_up.weight", ".lora_B.weight"), (".lora_down.weight", ".lora_A.weight")):
            if k.endswith(old):
                peft["base_model.model." + k.removesuffix(old) + new] = v
    save_file(peft, d / "sd1_peft.safetensors")
    (d / "native.tmp").unlink()


EXAMPLES = [(cid, m.group(1), m.group(2)) for cid, text in EXPLANATIONS.items() for m in EXAMPLE.finditer(text)]


@pytest.mark.parametrize("cid,kind,text", EXAMPLES, ids=[e[0] for e in EXAMPLES])
def test_every_example_produces_its_code(cid, kind, text, example_dir, monkeypatch):
    monkeypatch.chdir(example_dir)
    monkeypatch.setenv("MECHA_PATH", "")
    path = example_dir / f"{cid}.mecha"
    path.write_text(text, encoding="utf-8")
    planned = pipeline.plan(pipeline.load(path))
    assert cid in {d.code for d in planned.diagnostics}, [(d.code, d.message) for d in planned.diagnostics]


def test_there_are_many_examples():
    assert len(EXAMPLES) >= 90


def test_docs_diagnostics_md_is_generated_from_the_registry():
    target = ROOT / "docs" / "diagnostics.md"
    assert target.read_text(encoding="utf-8") == markdown_reference(), \
        "regenerate it: python -m mechalang.commands.explain_code"


def test_explain_code_command():
    runner = CliRunner()
    r = runner.invoke(app, ["explain-code", "E0405"])
    assert r.exit_code == 0 and r.output.startswith("E0405 (recursive-template, error): a template that calls itself")
    assert runner.invoke(app, ["explain-code", "recursive-template"]).output == r.output
    listing = runner.invoke(app, ["explain-code"])
    assert listing.exit_code == 0 and len(listing.output.splitlines()) == len(codes.CODES.all())
    bad = runner.invoke(app, ["explain-code", "E9999"])
    assert bad.exit_code == 1 and "error[E0707]: no diagnostic code `E9999`" in bad.output


def test_json_covers_command_line_failures(tmp_path):
    runner = CliRunner()
    r = runner.invoke(app, ["merge", "a.safetensors", "b.safetensors", "--method", "nope", "--format", "json"])
    assert r.exit_code == 2
    assert [d["code"] for d in json.loads(r.output)] == ["E0703"]
    r = runner.invoke(app, ["info", "sdxll", "--plugin", str(tmp_path / "missing.py")])
    assert r.exit_code == 1 and "E0702" in r.output
