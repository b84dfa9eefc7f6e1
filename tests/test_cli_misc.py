"""CLI behaviour beyond merging: provenance with --hash, info, explain on the examples, plugins by
entry point, convert, JSON diagnostics."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from safetensors import safe_open
from typer.testing import CliRunner

from mechalang.cli import app
from mechalang.methods import registry

ROOT = Path(__file__).parent.parent
EXAMPLES = ROOT / "examples"
runner = CliRunner()




def test_hash_records_sha256_and_a1111_fields(small_models, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    r = tmp_path / "h.mecha"
    r.write_text(f'''
let a = model("{small_models / 'a.safetensors'}")
let b = model("{small_models / 'b.safetensors'}")
export weighted_sum(a, b, alpha=0.4) to "h.safetensors" as fp16
''')
    res = runner.invoke(app, ["run", str(r), "--hash"])
    assert res.exit_code == 0, res.output
    sha_a = hashlib.sha256((small_models / "a.safetensors").read_bytes()).hexdigest()
    sha_b = hashlib.sha256((small_models / "b.safetensors").read_bytes()).hexdigest()
    with safe_open(str(tmp_path / "h.safetensors"), "pt") as f:
        meta = f.metadata()
    inputs = json.loads(meta["mechalang.inputs"])
    assert [i["sha256"] for i in inputs] == [sha_a, sha_b]
    models = json.loads(meta["sd_merge_models"])
    assert set(models) == {sha_a, sha_b}
    recipe = json.loads(meta["sd_merge_recipe"])
    assert recipe["primary_model_hash"] == sha_a and recipe["secondary_model_hash"] == sha_b
    assert recipe["interp_method"] == "weighted_sum" and recipe["multiplier"] == 0.4
    assert meta["modelspec.architecture"] == "stable-diffusion-v1"


def test_sha256_argument_is_verified(small_models, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    r = tmp_path / "s.mecha"
    r.write_text(f'''
let a = model("{small_models / 'a.safetensors'}", sha256="{'0' * 64}")
let b = model("{small_models / 'b.safetensors'}")
export weighted_sum(a, b) to "s.safetensors"
''')
    res = runner.invoke(app, ["run", str(r)])
    assert res.exit_code == 1
    assert "E0227" in res.output and "does not have the sha256" in res.output
    assert not (tmp_path / "s.safetensors").exists()


def test_info_lists_every_architecture_and_describes_one():
    res = runner.invoke(app, ["info"])
    assert res.exit_code == 0
    for name in ("sd1", "sdxl", "sd3", "flux", "sd1-kohya", "sdxl-kohya", "llama", "bert", "generic"):
        assert name in res.output
    res = runner.invoke(app, ["info", "sd1"])
    assert res.exit_code == 0
    assert "IN00" in res.output and "OUT11" in res.output and "attn2" in res.output and "clip_l" in res.output
    res = runner.invoke(app, ["info", "sdx1"])
    assert res.exit_code == 1 and "sdxl" in res.output


@pytest.mark.parametrize("recipe,key", [
    ("block_weighted.mecha", "model.diffusion_model.output_blocks.4.1.transformer_blocks.0.attn2.to_q.weight"),
    ("ties.mecha", "model.diffusion_model.input_blocks.1.0.in_layers.2.weight"),
    ("add_difference.mecha", "cond_stage_model.transformer.text_model.final_layer_norm.weight"),
    ("sdxl_presets.mecha", "model.diffusion_model.middle_block.1.proj_in.weight"),
])
def test_explain_works_on_the_examples(example_workspace, recipe, key):
    res = runner.invoke(app, ["explain", str(example_workspace / recipe), key])
    assert res.exit_code == 0, res.output
    assert key in res.output and "block" in res.output


def test_explain_names_the_rule_that_set_a_value(example_workspace):
    key = "model.diffusion_model.output_blocks.4.1.transformer_blocks.0.attn2.to_q.weight"
    res = runner.invoke(app, ["explain", str(example_workspace / "block_weighted.mecha"), key])
    assert 'alpha = 0.9' in res.output
    assert 'set by `"OUT*" & attn2: 0.9`' in res.output


def test_entry_point_plugins_are_loaded(monkeypatch):
    class FakeEntryPoint:
        name = "fake"
        value = "fake_pkg:methods"

        def load(self):
            @registry.merge_method(name="entry_point_method", formula="a")
            def entry_point_method(a: registry.Same) -> registry.Same:
                return a

    import importlib.metadata as md

    monkeypatch.setattr(md, "entry_points", lambda group=None: [FakeEntryPoint()] if group == "mechalang.methods" else [])
    assert registry.load_entry_points() == []
    spec = registry.REGISTRY.get("entry_point_method")
    assert spec is not None and spec.source == "fake (fake_pkg:methods)"
    registry.REGISTRY._methods.pop("entry_point_method")


def test_convert_prints_mechalang_that_checks(example_workspace):
    res = runner.invoke(app, ["convert", str(example_workspace / "sdmecha" / "block_weighted_xl.mecha")])
    assert res.exit_code == 0, res.output
    assert "weighted_sum(xl_base, xl_tuned, alpha=alpha_1)" in res.output
    res = runner.invoke(app, ["check", str(example_workspace / "sdmecha" / "block_weighted_xl.mecha")])
    assert res.exit_code == 0, res.output


def test_check_json_format(small_models, tmp_path):
    r = tmp_path / "j.mecha"
    r.write_text(f'let a = model("{small_models / "a.safetensors"}")\nexport a + a to "x.safetensors"\n')
    res = runner.invoke(app, ["check", str(r), "--format", "json"])
    assert res.exit_code == 1
    data = json.loads(res.stdout)
    assert data[0]["code"] == "E0231" and data[0]["span"]["line"] == 2 and data[0]["severity"] == "error"


def test_the_process_exits_with_the_commands_status_and_full_output(small_models, tmp_path):
    """`mecha` ends its process without tearing the interpreter down once torch is loaded (see
    cli._exit): the exit status, the streams and the files written must be those of a normal exit."""
    import subprocess
    import sys

    recipe = tmp_path / "r.mecha"
    out = tmp_path / "out.safetensors"
    recipe.write_text(f'let a = model("{small_models / "a.safetensors"}")\n'
                      f'let b = model("{small_models / "b.safetensors"}")\n'
                      f'export weighted_sum(a, b, alpha=0.5) to "{out}"\n')
    env = {**__import__("os").environ, "PYTHONPATH": str(ROOT)}

    def mecha(*args):
        return subprocess.run([sys.executable, "-m", "mechalang", *args], capture_output=True, text=True,
                              env=env, cwd=tmp_path, timeout=300)

    ok = mecha("run", str(recipe))
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.rstrip().splitlines()[-1].startswith("done in ")
    with safe_open(str(out), "pt") as f:
        assert len(list(f.keys())) > 0
    again = mecha("run", str(recipe))  # the output exists now: a usage error, after the check
    assert again.returncode == 1 and "exists" in again.stderr
    missing = mecha("run", str(tmp_path / "none.mecha"))
    assert missing.returncode == 1 and "no such file" in missing.stderr
