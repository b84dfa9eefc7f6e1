"""The recipe graph: identical sub-expressions are one node; lowering shares them across exports;
templates compose through `--set name=recipe.mecha`."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file

from mechalang import pipeline
from mechalang.runtime.plan import Op


def write(tmp: Path, name: str, text: str) -> Path:
    p = tmp / name
    p.write_text(text)
    return p


def test_identical_subexpressions_are_one_node_and_one_plan_expression(small_models, tmp_path):
    r = write(tmp_path, "r.mecha", f'''
let a = model("{small_models / 'a.safetensors'}")
let b = model("{small_models / 'b.safetensors'}")
let c = model("{small_models / 'c.safetensors'}")
def mix(x, y) = weighted_sum(x, y, alpha=0.3)
let one = mix(a, b)
let two = weighted_sum(a, b, alpha=0.3)
export add_difference(one, c, a) to "o1.safetensors"
export two + 0.5 * (c - a) to "o2.safetensors"
''')
    c = pipeline.plan(pipeline.load(r))
    assert c.ok, [d.message for d in c.diagnostics]
    e1, e2 = c.program.exports
    ws1 = e1.node.args[0]
    ws2 = e2.node.args[0]
    assert ws1 is ws2  # the template call and the direct call are one node
    assert len(c.program.builder.nodes("weighted_sum")) == 1
    key = "model.diffusion_model.time_embed.0.weight"
    t1 = next(t for t in c.lowered.plan.outputs[0].tensors if t.key == key)
    t2 = next(t for t in c.lowered.plan.outputs[1].tensors if t.key == key)
    assert isinstance(t1.expr, Op) and t1.expr.args[0] == t2.expr.args[0]  # equal: memoized once per key


def test_recipe_file_as_param_value(small_models, tmp_path):
    write(tmp_path, "inner.mecha", f'''
let a = model("{small_models / 'a.safetensors'}")
let b = model("{small_models / 'b.safetensors'}")
export weighted_sum(a, b, alpha=0.5) to "inner.safetensors"
''')
    outer = write(tmp_path, "outer.mecha", f'''
param base: Model
let c = model("{small_models / 'c.safetensors'}")
export weighted_sum(base, c, alpha=0.5) to "outer.safetensors"
''')
    result = pipeline.run(pipeline.load(outer, params={"base": tmp_path / "inner.mecha"}))
    assert result.ok, result.diagnostics
    assert not (tmp_path / "inner.safetensors").exists()  # the inner recipe's export is not run
    out = load_file(str(tmp_path / "outer.safetensors"))
    a, b, cc = (load_file(str(small_models / f"{n}.safetensors")) for n in "abc")
    k = "model.diffusion_model.time_embed.0.weight"
    expected = 0.5 * (0.5 * a[k].float() + 0.5 * b[k].float()) + 0.5 * cc[k].float()
    torch.testing.assert_close(out[k].float(), expected.to(a[k].dtype).float(), rtol=2e-3, atol=2e-3)
