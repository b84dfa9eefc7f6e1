"""The extension API: a plugin's method is checked and run like a built-in."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from mechalang.cli import app

ROOT = Path(__file__).parent.parent
PLUGIN = ROOT / "examples" / "plugins" / "my_methods.py"
runner = CliRunner()


def test_plugin_method_checks_and_runs(small_models, tmp_path):
    r = tmp_path / "p.mecha"
    r.write_text(f'''
let a = model("{small_models / 'a.safetensors'}")
let b = model("{small_models / 'b.safetensors'}")
export squared_pull(a, b, alpha=0.25) to "o.safetensors"
''')
    res = runner.invoke(app, ["run", str(r)])
    assert res.exit_code == 1 and "undefined name `squared_pull`" in res.output
    res = runner.invoke(app, ["run", str(r), "--plugin", str(PLUGIN)])
    assert res.exit_code == 0, res.output
    out = load_file(str(tmp_path / "o.safetensors"))
    a = load_file(str(small_models / "a.safetensors"))
    b = load_file(str(small_models / "b.safetensors"))
    for k in a:
        if a[k].is_floating_point():
            A, B = a[k].float(), b[k].float()
            expected = A + 0.25 * (B - A).abs() * (B - A)
            torch.testing.assert_close(out[k].float(), expected.to(a[k].dtype).float(), rtol=2e-3, atol=2e-3)


def test_plugin_signature_is_checked(small_models, tmp_path):
    r = tmp_path / "p.mecha"
    r.write_text(f'''
let a = model("{small_models / 'a.safetensors'}")
let b = model("{small_models / 'b.safetensors'}")
export squared_pull(a, b, alpha=1.5) to "o.safetensors"
''')
    res = runner.invoke(app, ["run", str(r), "--plugin", str(PLUGIN)])
    assert res.exit_code == 1
    assert "`alpha` of `squared_pull`: 1.5 is outside float in [0, 1]" in res.output


def test_info_methods_lists_plugin_and_builtins():
    res = runner.invoke(app, ["info", "--methods", "--plugin", str(PLUGIN)])
    assert res.exit_code == 0
    assert "squared_pull(a: same, b: same, alpha: float in [0, 1] = 0.5) -> same" in res.output
    assert "(from my_methods.py)" in res.output
    assert "weighted_sum(" in res.output and "ties(" in res.output


def test_bad_plugin_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("from mechalang import merge_method\n\n@merge_method\ndef oops(a, b):\n    return a\n")
    res = runner.invoke(app, ["info", "--methods", "--plugin", str(bad)])
    assert res.exit_code == 1
    assert "needs a space annotation" in res.output
    res = runner.invoke(app, ["info", "--methods", "--plugin", str(tmp_path / "missing.py")])
    assert res.exit_code == 1 and "no such file" in res.output


def test_a_second_plugin_cannot_redefine_a_method(tmp_path):
    assert runner.invoke(app, ["info", "--methods", "--plugin", str(PLUGIN)]).exit_code == 0
    clash = tmp_path / "clash.py"
    clash.write_text("from mechalang import merge_method, Same\n\n"
                     "@merge_method\ndef weighted_sum(a: Same, b: Same) -> Same:\n    return a\n")
    res = runner.invoke(app, ["info", "--methods", "--plugin", str(clash)])
    assert res.exit_code == 1
    assert "a merge method named 'weighted_sum' is already registered (by builtin)" in res.output
