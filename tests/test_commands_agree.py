"""Commands that agree with each other now that they share one pipeline, and regression tests for
the bugs the library issue reproduced."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mechalang import pipeline
from mechalang.cli import app
from mechalang.methods.registry import REGISTRY, Same, merge_method

runner = CliRunner()

PLUGIN = '''from mechalang import merge_method, Same, Float

@merge_method(formula="a + alpha·(b − a)")
def agree_pull(a: Same, b: Same, *, alpha: Float(0, 1) = 0.5) -> Same:
    return a + alpha * (b - a)
'''


@pytest.fixture
def recipe(small_models, tmp_path):
    plugin = tmp_path / "agree_plugin.py"
    plugin.write_text(PLUGIN)
    r = tmp_path / "p.mecha"
    r.write_text(f'let a = model("{small_models / "a.safetensors"}")\n'
                 f'let b = model("{small_models / "b.safetensors"}")\n'
                 'export agree_pull(a, b, alpha=0.3) to "p.safetensors"\n')
    return r, plugin


@pytest.mark.parametrize("command", [["check"], ["plan", "--key", "*time_embed.0.weight"],
                                     ["explain", None, "model.diffusion_model.time_embed.0.weight"],
                                     ["run", "--dry-run"]])
def test_plugin_on_every_command_that_compiles(recipe, command):
    r, plugin = recipe
    args = [a if a is not None else str(r) for a in command]
    if None not in command:
        args.insert(1, str(r))
    without = runner.invoke(app, args)
    assert without.exit_code == 1 and "E0401" in without.output  # an undefined name without it
    with_plugin = runner.invoke(app, args + ["--plugin", str(plugin)])
    assert with_plugin.exit_code == 0, with_plugin.output


def test_a_failing_plugin_is_a_diagnostic(recipe, tmp_path):
    r, _ = recipe
    bad = tmp_path / "bad_plugin.py"
    bad.write_text("raise RuntimeError('boom')\n")
    res = runner.invoke(app, ["check", str(r), "--plugin", str(bad), "--format", "json"])
    assert res.exit_code == 1
    assert [d["code"] for d in json.loads(res.output)][0] == "E0702"


def test_dry_run_does_not_ask_for_overwrite(recipe):
    r, plugin = recipe
    (r.parent / "p.safetensors").write_bytes(b"already here")
    res = runner.invoke(app, ["run", str(r), "--plugin", str(plugin), "--dry-run"])
    assert res.exit_code == 0, res.output
    assert "would write p.safetensors" in res.output or "would write" in res.output
    res = runner.invoke(app, ["run", str(r), "--plugin", str(plugin)])
    assert res.exit_code == 1 and "E0604" in res.output and "--overwrite" in res.output
    assert (r.parent / "p.safetensors").read_bytes() == b"already here"


def test_format_accepts_only_text_and_json(recipe):
    r, _ = recipe
    for command in (["check", str(r)], ["run", str(r)], ["fmt", str(r)], ["plan", str(r)]):
        res = runner.invoke(app, command + ["--format", "yaml"])
        assert res.exit_code == 2 and "yaml" in res.output


def test_no_export_is_a_warning_on_check_and_an_error_on_run(small_models, tmp_path):
    r = tmp_path / "lib.mecha"
    r.write_text(f'let a = model("{small_models / "a.safetensors"}")\n')
    res = runner.invoke(app, ["check", str(r)])
    assert res.exit_code == 0 and "warning[W0246]" in res.output
    res = runner.invoke(app, ["run", str(r)])
    assert res.exit_code == 1 and "error[E0246]" in res.output


def test_options_carry_help_text():
    res = runner.invoke(app, ["merge", "--help"])
    text = " ".join(res.output.replace("│", " ").split())  # as read, across the help's line breaks
    assert "weight of the second model: 0 = all A, 1 = all B" in text and "70% A + 30% B" in text
    assert "add_difference: A + alpha·(B − C)" in text
    for command in ("run", "check", "plan", "explain", "repl", "info"):
        assert "--plugin" in runner.invoke(app, [command, "--help"]).output, command


def test_quick_merge_of_files_with_non_ascii_names(small_models, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name, src in (("café.safetensors", "a"), ("naïve model.safetensors", "b")):
        (tmp_path / name).symlink_to(small_models / f"{src}.safetensors")
    printed = runner.invoke(app, ["merge", "café.safetensors", "naïve model.safetensors", "--print-recipe"])
    assert printed.exit_code == 0 and 'model("café.safetensors")' in printed.output
    res = runner.invoke(app, ["merge", "café.safetensors", "naïve model.safetensors", "--alpha", "0.25"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "cafe+naive-model-weighted-sum-0.25.safetensors").exists()  # the name rule's letters


def test_a_template_recursion_and_an_unclosed_bracket_have_different_codes(tmp_path):
    rec = tmp_path / "rec.mecha"
    rec.write_text("def f(x) = f(x)\nexport f(1) to \"o.safetensors\"\n")
    unclosed = tmp_path / "unclosed.mecha"
    unclosed.write_text("let x = (1 + 2\n")
    codes = {}
    for f in (rec, unclosed):
        res = runner.invoke(app, ["check", str(f), "--format", "json"])
        codes[f.stem] = {d["code"] for d in json.loads(res.output)}
    assert codes == {"rec": {"E0405"}, "unclosed": {"E0104"}}


def write_fp8_fnuz(path: Path) -> None:
    header = json.dumps({"w": {"dtype": "F8_E4M3FNUZ", "shape": [2, 2], "data_offsets": [0, 4]},
                         "b": {"dtype": "F16", "shape": [2], "data_offsets": [4, 8]}}).encode()
    header += b" " * (-len(header) % 8)
    path.write_bytes(struct.pack("<Q", len(header)) + header + bytes(8))


def test_an_unsupported_dtype_is_a_diagnostic_not_a_crash(tmp_path):
    write_fp8_fnuz(tmp_path / "fnuz.safetensors")
    r = tmp_path / "r.mecha"
    r.write_text('let a = model("fnuz.safetensors")\nexport a to "o.safetensors"\n')
    res = runner.invoke(app, ["check", str(r), "--format", "json"])
    assert res.exit_code == 1, res.output
    (d,) = json.loads(res.output)
    assert d["code"] == "E0228" and "fnuz.safetensors" in d["message"] and "`w` (F8_E4M3FNUZ)" in d["message"]


def test_an_architecture_registered_after_first_use_is_a_known_name(small_models, tmp_path):
    from mechalang.archs import registry
    from mechalang.archs.arch import Arch, PatternSet

    r = tmp_path / "r.mecha"
    r.write_text(f'let a = model("{small_models / "a.safetensors"}", arch=tinyarch_reg)\nexport a to "o.safetensors"\n')
    assert not pipeline.load(r).ok  # an undefined name, and the architecture table is now loaded
    registry.register(Arch("tinyarch_reg", blocks=[PatternSet("ALL", ("*",))]))
    try:
        program = pipeline.load(r)
        assert program.ok, [d.message for d in program.diagnostics]
        assert program.exports[0].node.arch.name == "tinyarch_reg"
    finally:
        registry._registered[:] = [a for a in registry._registered if a.name != "tinyarch_reg"]
        registry.reload()


def test_a_broken_architecture_file_is_a_warning_not_a_crash(small_models, tmp_path, monkeypatch):
    (tmp_path / "broken.toml").write_text('name = "brk"\n[[blocks]]\nname = "X"\nparetns = ["*"]\n')
    monkeypatch.setenv("MECHA_PATH", str(tmp_path))
    res = runner.invoke(app, ["info"])
    assert res.exit_code == 0 and "warning[W0229]" in res.output and "paretns" in res.output
    r = tmp_path / "r.mecha"
    r.write_text(f'export model("{small_models / "a.safetensors"}") to "o.safetensors"\n')
    res = runner.invoke(app, ["check", str(r)])
    assert res.exit_code == 0 and "W0229" in res.output


def test_quick_merge_writes_into_the_first_models_folder(small_models, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MECHA_MODELS_DIR", f"{small_models}:{tmp_path / 'other'}")
    res = runner.invoke(app, ["merge", "a.safetensors", "b.safetensors", "--print-recipe"])
    assert res.exit_code == 0 and f'to "{small_models}/a+b-weighted-sum-0.5.safetensors"' in res.output


def test_every_bad_hyperparameter_of_a_call_is_reported(small_models, tmp_path):
    r = tmp_path / "r.mecha"
    r.write_text(f'let a = model("{small_models / "a.safetensors"}")\nlet b = model("{small_models / "b.safetensors"}")\n'
                 'export slerp(a, b, alpha=2, dot_threshold=5) to "o.safetensors"\n')
    res = runner.invoke(app, ["check", str(r), "--format", "json"])
    assert [d["code"] for d in json.loads(res.output)] == ["E0222", "E0222"]


def test_a_key_name_parameter_cannot_be_given(small_models, tmp_path):
    r = tmp_path / "r.mecha"
    r.write_text(f'let a = model("{small_models / "a.safetensors"}")\nlet b = model("{small_models / "b.safetensors"}")\n'
                 'export a + dare_linear(b - a, key="x") to "o.safetensors"\n')
    res = runner.invoke(app, ["check", str(r), "--format", "json"])
    (d,) = json.loads(res.output)
    assert d["code"] == "E0218" and "mecha passes each tensor's key name there" in d["message"]


def test_list_params_from_the_command_line(small_models, tmp_path):
    r = tmp_path / "r.mecha"
    r.write_text(f'param ws: list[float] = [0.5, 0.5]\nparam out = "o.safetensors"\n'
                 f'let a = model("{small_models / "a.safetensors"}")\nlet b = model("{small_models / "b.safetensors"}")\n'
                 'export weighted_sum(a, b, alpha=ws[1]) to out\n')
    program = pipeline.load(r, params={"ws": "0.3,0.4", "out": "p.safetensors"})
    assert program.ok and program.params["ws"].items == (0.3, 0.4)
    assert program.exports[0].path.name == "p.safetensors"  # an untyped param with a string default is a str
    res = runner.invoke(app, ["check", str(r), "--set", "ws=0.3,x"])
    assert res.exit_code == 1 and "--set ws=x: expected a number" in res.output


def test_command_line_mistakes_exit_2_and_nothing_starts(small_models, tmp_path):
    r = tmp_path / "r.mecha"
    r.write_text(f'export model("{small_models / "a.safetensors"}") to "o.safetensors"\n')
    assert runner.invoke(app, ["check", str(r), "--set", "no-equals"]).exit_code == 2
    res = runner.invoke(app, ["run", str(r), "--device", "tpu"])
    assert res.exit_code == 2 and "E0701" in res.output
    (tmp_path / "o.safetensors").write_bytes(b"x")
    res = runner.invoke(app, ["run", str(r)])
    assert res.exit_code == 1 and "E0604" in res.output and "merging" not in res.output  # no progress line


def test_output_option_names_the_model_in_its_metadata(small_models, tmp_path):
    from safetensors import safe_open

    r = tmp_path / "r.mecha"
    r.write_text(f'let a = model("{small_models / "a.safetensors"}")\nlet b = model("{small_models / "b.safetensors"}")\n'
                 'export weighted_sum(a, b) to "recipe_name.safetensors"\n')
    res = runner.invoke(app, ["run", str(r), "-o", str(tmp_path / "chosen.safetensors")])
    assert res.exit_code == 0, res.output
    with safe_open(str(tmp_path / "chosen.safetensors"), "pt") as f:
        assert f.metadata()["modelspec.title"] == "chosen"


def test_version_and_method_sources():
    assert runner.invoke(app, ["--version"]).output.startswith("mecha 0.")
    @merge_method
    def agree_script_method(a: Same, b: Same) -> Same:
        return a

    assert REGISTRY.get("agree_script_method").source == __name__
    assert REGISTRY.get("weighted_sum").source == "builtin"
