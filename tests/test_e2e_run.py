"""End to end: `mecha run` / `mecha merge` on small synthetic SD1-shaped models, every output
tensor compared with an independent torch computation (dtypes and metadata included)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from .cli_util import mecha


def recipe(tmp_path: Path, text: str, name: str = "r.mecha") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def f32(t: torch.Tensor) -> torch.Tensor:
    return t.to(torch.float32)


def assert_close_as(out: torch.Tensor, expected_f32: torch.Tensor, dtype: torch.dtype) -> None:
    assert out.dtype == dtype
    # The engine computes in fp32 and casts once; so does this reference.
    torch.testing.assert_close(out, expected_f32.to(dtype), rtol=0, atol=0) if dtype == torch.float32 else \
        torch.testing.assert_close(f32(out), f32(expected_f32.to(dtype)), rtol=2e-3, atol=2e-3)


def sd1_alpha_reference(key: str) -> float:
    """The recipe's map below, resolved by hand from key names (independent of the arch data)."""
    alpha = 0.5
    # OUT00..OUT11 are the output blocks; DESIGN.md puts the final `out.*` layers in OUT11.
    out_block = key.startswith(("model.diffusion_model.output_blocks.", "model.diffusion_model.out."))
    if out_block:
        alpha = 0.7
    if ".attn2." in key:
        alpha = 0.6
    if out_block and ".attn2." in key:
        alpha = 0.9
    if key.startswith("cond_stage_model."):
        alpha = 0.0
    return alpha


def test_weighted_sum_block_map_matches_reference(small_models, tmp_path):
    r = recipe(tmp_path, f'''
let a = model("{small_models / 'a.safetensors'}")
let b = model("{small_models / 'b.safetensors'}")
let w = {{
    default: 0.5,
    "OUT*": 0.7,
    attn2: 0.6,
    "OUT*" & attn2: 0.9,
    clip_l: 0.0,
}}
export weighted_sum(a, b, alpha=w) to "out.safetensors"
''')
    res = mecha("run", str(r))
    assert res.exit_code == 0, res.output
    out = load_file(str(tmp_path / "out.safetensors"))
    a = load_file(str(small_models / "a.safetensors"))
    b = load_file(str(small_models / "b.safetensors"))
    assert set(out) == set(a)
    for k, t in out.items():
        if not a[k].is_floating_point():
            assert t.dtype == a[k].dtype and torch.equal(t, a[k]), k
            continue
        al = sd1_alpha_reference(k)
        expected = (1 - al) * f32(a[k]) + al * f32(b[k])
        assert_close_as(t, expected, a[k].dtype)
    with safe_open(str(tmp_path / "out.safetensors"), "pt") as f:
        meta = f.metadata()
    assert meta["mechalang.version"]
    assert "weighted_sum(a, b, alpha=w)" in meta["mechalang.recipe"]
    assert [i["name"] for i in json.loads(meta["mechalang.inputs"])] == ["a", "b"]


def test_task_arithmetic_fp16_export_and_order(small_models, tmp_path):
    r = recipe(tmp_path, f'''
let base = model("{small_models / 'a.safetensors'}")
let tuned = model("{small_models / 'b.safetensors'}")
let other = model("{small_models / 'c.safetensors'}")
export base + 0.5 * (tuned - base) - 0.25 * (other - base) to "ta.safetensors" as fp32
''')
    res = mecha("run", str(r))
    assert res.exit_code == 0, res.output
    out = load_file(str(tmp_path / "ta.safetensors"))
    a, b, c = (load_file(str(small_models / f"{n}.safetensors")) for n in "abc")
    for k, t in out.items():
        if not a[k].is_floating_point():
            assert torch.equal(t, a[k])
            continue
        A, B, C = f32(a[k]), f32(b[k]), f32(c[k])
        expected = (A + 0.5 * (B - A)) + (-0.25) * (C - A)
        assert t.dtype == torch.float32
        torch.testing.assert_close(t, expected, rtol=1e-6, atol=1e-6)
    # output order follows the first input's file order
    with safe_open(str(small_models / "a.safetensors"), "pt") as f:
        first_order = list(f.keys())
    with safe_open(str(tmp_path / "ta.safetensors"), "pt") as f:
        assert sorted(f.keys()) == sorted(first_order)


def test_add_difference_and_sigmoid(small_models, tmp_path):
    r = recipe(tmp_path, f'''
let a = model("{small_models / 'a.safetensors'}")
let b = model("{small_models / 'b.safetensors'}")
let c = model("{small_models / 'c.safetensors'}")
export add_difference(a, b, c, alpha=0.8) to "ad.safetensors"
export sigmoid(a, b, alpha=0.3) to "sig.safetensors"
export inv_sigmoid(a, b, alpha=0.3) to "inv.safetensors"
''')
    res = mecha("run", str(r))
    assert res.exit_code == 0, res.output
    a, b, c = (load_file(str(small_models / f"{n}.safetensors")) for n in "abc")
    ad = load_file(str(tmp_path / "ad.safetensors"))
    sig = load_file(str(tmp_path / "sig.safetensors"))
    inv = load_file(str(tmp_path / "inv.safetensors"))
    s_alpha = 3 * 0.3 ** 2 - 2 * 0.3 ** 3
    i_alpha = 0.5 - math.sin(math.asin(1 - 2 * 0.3) / 3)
    for k in a:
        if not a[k].is_floating_point():
            continue
        A, B, C = f32(a[k]), f32(b[k]), f32(c[k])
        assert_close_as(ad[k], A + 0.8 * (B - C), a[k].dtype)
        assert_close_as(sig[k], (1 - s_alpha) * A + s_alpha * B, a[k].dtype)
        assert_close_as(inv[k], (1 - i_alpha) * A + i_alpha * B, a[k].dtype)


def test_missing_keys_kept_and_reported_and_strict(small_models, tmp_path):
    r = recipe(tmp_path, f'''
let a = model("{small_models / 'a.safetensors'}")
let p = model("{small_models / 'partial.safetensors'}")
export weighted_sum(a, p, alpha=0.5) to "kept.safetensors"
''')
    res = mecha("run", str(r))
    assert res.exit_code == 0, res.output
    assert "kept unchanged from `a`" in res.output and "first_stage_model" in res.output
    out = load_file(str(tmp_path / "kept.safetensors"))
    a = load_file(str(small_models / "a.safetensors"))
    vae = [k for k in a if k.startswith("first_stage_model.")]
    assert vae and all(torch.equal(out[k], a[k]) for k in vae)
    res = mecha("run", str(r), "--strict", "--overwrite")
    assert res.exit_code == 1
    assert "E0301" in res.output


def test_existing_output_needs_overwrite_and_dry_run_writes_nothing(small_models, tmp_path):
    r = recipe(tmp_path, f'''
let a = model("{small_models / 'a.safetensors'}")
let b = model("{small_models / 'b.safetensors'}")
export weighted_sum(a, b) to "o.safetensors"
''')
    res = mecha("run", str(r), "--dry-run")
    assert res.exit_code == 0 and "would write" in res.output
    assert not (tmp_path / "o.safetensors").exists()
    assert mecha("run", str(r)).exit_code == 0
    before = (tmp_path / "o.safetensors").read_bytes()
    res = mecha("run", str(r))
    assert res.exit_code == 1 and "--overwrite" in res.output
    assert mecha("run", str(r), "--overwrite", "--threads", "1").exit_code == 0
    assert (tmp_path / "o.safetensors").read_bytes() == before  # deterministic, any thread count


def test_output_option_and_output_equal_input_refused(small_models, tmp_path):
    r = recipe(tmp_path, f'''
let a = model("{small_models / 'a.safetensors'}")
let b = model("{small_models / 'b.safetensors'}")
export weighted_sum(a, b) to "o.safetensors"
''')
    res = mecha("run", str(r), "-o", str(small_models / "a.safetensors"), "--overwrite")
    assert res.exit_code == 1 and "inputs" in res.output
    res = mecha("run", str(r), "-o", str(tmp_path / "elsewhere.safetensors"))
    assert res.exit_code == 0, res.output
    assert (tmp_path / "elsewhere.safetensors").exists() and not (tmp_path / "o.safetensors").exists()


def test_set_params_and_model_params(small_models, tmp_path):
    r = recipe(tmp_path, '''
param first: Model
param second = model("unused.safetensors")
param alpha: float = 0.5
export weighted_sum(first, second, alpha=alpha) to "p.safetensors"
''')
    res = mecha("check", str(r), "--set", f"first={small_models / 'a.safetensors'}")
    assert res.exit_code == 1 and "unused.safetensors" in res.output
    res = mecha("run", str(r), "--set", f"first={small_models / 'a.safetensors'}",
                "--set", f"second={small_models / 'c.safetensors'}", "--set", "alpha=0.25")
    assert res.exit_code == 0, res.output
    out = load_file(str(tmp_path / "p.safetensors"))
    a = load_file(str(small_models / "a.safetensors"))
    c = load_file(str(small_models / "c.safetensors"))
    k = next(k for k in a if a[k].is_floating_point() and a[k].numel() > 1)
    assert_close_as(out[k], 0.75 * f32(a[k]) + 0.25 * f32(c[k]), a[k].dtype)
    with safe_open(str(tmp_path / "p.safetensors"), "pt") as f:
        assert "param alpha: float = 0.25" in f.metadata()["mechalang.recipe"]


def test_check_finite_reports_nan_key_and_leaves_no_output(small_models, tmp_path):
    a = load_file(str(small_models / "a.safetensors"))
    k = next(k for k in a if a[k].is_floating_point() and k.startswith("model.diffusion_model."))
    bad = dict(a)
    bad[k] = a[k].clone()
    bad[k].view(-1)[0] = float("nan")
    save_file(bad, str(tmp_path / "nan.safetensors"))
    r = recipe(tmp_path, f'''
let a = model("{small_models / 'a.safetensors'}")
let n = model("nan.safetensors")
export weighted_sum(a, n) to "o.safetensors"
''')
    res = mecha("run", str(r), "--check-finite")
    assert res.exit_code == 1
    assert k in res.output
    assert not (tmp_path / "o.safetensors").exists()
    assert not [p for p in tmp_path.iterdir() if "mecha-tmp" in p.name]


def test_quick_merge(small_models, tmp_path):
    res = mecha("merge", "a.safetensors", "b.safetensors", "--alpha", "0.25", "--models-dir", str(small_models),
                "--name", "ab.mix", cwd=tmp_path)
    assert res.exit_code == 0, res.output
    out = load_file(str(small_models / "ab.mix.safetensors"))
    a = load_file(str(small_models / "a.safetensors"))
    b = load_file(str(small_models / "b.safetensors"))
    for k in a:
        if a[k].is_floating_point():
            assert_close_as(out[k], 0.75 * f32(a[k]) + 0.25 * f32(b[k]), a[k].dtype)
    res = mecha("merge", "a.safetensors", "b.safetensors", "--models-dir", str(small_models), "--name", "ab.mix",
                cwd=tmp_path)
    assert res.exit_code == 1 and "--overwrite" in res.output
    (small_models / "ab.mix.safetensors").unlink()
    res = mecha("merge", "a.safetensors", "b.safetensors", "--name", "bad/name", cwd=tmp_path)
    assert res.exit_code == 2
    res = mecha("merge", "a.safetensors", "b.safetensors", "c.safetensors", "--models-dir", str(small_models),
                cwd=tmp_path)
    assert res.exit_code == 2 and "takes 2 models" in res.output
    res = mecha("merge", "a.safetensors", "b.safetensors", "--print-recipe", "--method", "sigmoid", cwd=tmp_path)
    assert res.exit_code == 0 and "sigmoid(a, b, alpha=0.5)" in res.output


def test_quick_merge_force_over_shared_keys(small_models, tmp_path):
    res = mecha("merge", "a.safetensors", "xl.safetensors", "--models-dir", str(small_models), "--name", "ax",
                cwd=tmp_path)
    assert res.exit_code == 1 and "different architectures" in res.output
    res = mecha("merge", "a.safetensors", "xl.safetensors", "--models-dir", str(small_models), "--name", "ax",
                "--force", cwd=tmp_path)
    assert res.exit_code == 0, res.output
    out = load_file(str(small_models / "ax.safetensors"))
    a = load_file(str(small_models / "a.safetensors"))
    xl = load_file(str(small_models / "xl.safetensors"))
    shared = [k for k in a if k in xl and a[k].shape == xl[k].shape and a[k].is_floating_point()]
    for k in shared:
        assert_close_as(out[k], 0.5 * f32(a[k]) + 0.5 * f32(xl[k]), a[k].dtype)
    (small_models / "ax.safetensors").unlink()


def test_plan_and_explain(small_models, tmp_path):
    r = recipe(tmp_path, f'''
let a = model("{small_models / 'a.safetensors'}")
let b = model("{small_models / 'b.safetensors'}")
export weighted_sum(a, b, alpha={{default: 0.5, "OUT*": 0.7}}) to "o.safetensors"
''')
    res = mecha("plan", str(r), "--key", "model.diffusion_model.output_blocks.0.0.*")
    assert res.exit_code == 0, res.output
    assert "weighted_sum(a, b, alpha=0.7)" in res.output
    assert "estimated peak memory" in res.output
    key = "model.diffusion_model.output_blocks.0.0.in_layers.0.weight"
    res = mecha("explain", str(r), key)
    assert res.exit_code == 0, res.output
    assert "block OUT00" in res.output
    assert 'alpha = 0.7' in res.output and '"OUT*": 0.7' in res.output
    res = mecha("explain", str(r), "model.diffusion_model.nope")
    assert res.exit_code == 1
