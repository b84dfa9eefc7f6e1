"""Regression tests for language behaviour found wrong while documenting it."""

from __future__ import annotations

from mechalang import pipeline


def check(small_models, text: str, tmp_path):
    r = tmp_path / "r.mecha"
    r.write_text(text.replace("A.st", str(small_models / "a.safetensors"))
                 .replace("B.st", str(small_models / "b.safetensors")))
    return pipeline.plan(pipeline.load(r), trace=True)


def test_a_template_may_be_called_above_its_def(small_models, tmp_path):
    p = check(small_models, 'let a = model("A.st")\nlet x = f(a)\ndef f(m) = weighted_sum(m, model("B.st"))\n'
                            'export x to "o.safetensors"\n', tmp_path)
    assert p.ok and len(p.plan.outputs) == 1


def test_a_template_called_before_a_name_it_uses_is_an_error(small_models, tmp_path):
    p = check(small_models, 'let a = model("A.st")\nlet x = f(a)\nlet b = model("B.st")\n'
                            'def f(m) = g(m)\ndef g(m) = weighted_sum(m, b)\nexport x to "o.safetensors"\n', tmp_path)
    (d,) = [d for d in p.diagnostics if d.is_error]
    assert d.code == "E0403" and d.message == "`f` is used before `b`, which it uses, is bound"
    assert (d.span.line, d.span.col) == (2, 9)


def test_a_plain_map_overrides_a_preset_for_each_architecture(small_models, tmp_path):
    p = check(small_models, 'from "std/presets" import GRAD_V\nlet a = model("A.st")\nlet b = model("B.st")\n'
                            'export weighted_sum(a, b, alpha={M00: 0.123} | GRAD_V) to "o.safetensors"\n', tmp_path)
    assert p.ok
    key = "model.diffusion_model.middle_block.1.proj_in.weight"
    (t,) = [t for t in p.plan.outputs[0].tensors if t.key == key]
    assert dict(t.expr.hypers)["alpha"] == 0.123
    key = "model.diffusion_model.input_blocks.1.0.in_layers.2.weight"  # IN01: GRAD_V's value
    (t,) = [t for t in p.plan.outputs[0].tensors if t.key == key]
    assert dict(t.expr.hypers)["alpha"] != 0.123


def test_hyper_annotations_resolve_aliases_and_report_unknown_architectures(small_models, tmp_path):
    ok = check(small_models, 'let w: Hyper[sd15] = mbw(sd1, "' + ",".join(["0.5"] * 26) + '")\n'
                             'let a = model("A.st")\nexport a to "o.safetensors"\n', tmp_path)
    assert ok.ok, [d.message for d in ok.diagnostics]
    bad = check(small_models, 'let w: Hyper[sdx] = {default: 0.5}\nlet a = model("A.st")\nexport a to "o.safetensors"\n',
                tmp_path)
    assert [d.code for d in bad.diagnostics if d.is_error] == ["E0225"]


def test_mbw_takes_an_architecture_name_as_a_string(small_models, tmp_path):
    p = check(small_models, 'let a = model("A.st")\nlet b = model("B.st")\n'
                            'export weighted_sum(a, b, alpha=mbw("sd1", "' + ",".join(["0.5"] * 26) + '")) to "o.safetensors"\n',
              tmp_path)
    assert p.ok, [d.message for d in p.diagnostics]
