"""The REPL session: statements accumulate, expressions show their type, meta-commands work."""

from __future__ import annotations

from mechalang.repl import Session


def test_session_builds_values_and_reports_errors(small_models, tmp_path):
    s = Session(models_dir=str(small_models), cwd=tmp_path)
    assert s.handle('let a = model("a.safetensors")').startswith("a: Model[sd1] from a.safetensors")
    assert "Model[sd1]" in s.handle('let b = model("b.safetensors")')
    assert s.handle("a - b").startswith("Delta[sd1]")
    assert s.handle(":type weighted_sum(a, b)").startswith("Model[sd1]")
    assert "float = 0.75" in s.handle("0.5 + 0.25")
    err = s.handle("let c = a + b")
    assert "E0231" in err and "weighted_sum" in err
    assert "let c" not in s.handle(":session")  # rejected statements are not kept
    keys = s.handle(':keys a "model.diffusion_model.time_embed*"')
    assert keys.splitlines()[0] == "4 keys"
    plan = s.handle(":plan weighted_sum(a, b, alpha=0.3) *.time_embed.0.weight")
    assert "weighted_sum(a, b, alpha=0.3)" in plan
    out = s.handle(":run weighted_sum(a, b) to merged.safetensors")
    assert "wrote" in out and (tmp_path / "merged.safetensors").exists()
    assert "unknown command" in s.handle(":nope")
