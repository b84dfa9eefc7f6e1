"""`export DELTA to "x.safetensors" as lora(rank=…, dialect=…, dtype=…, clamp=…)`: writing deltas as
LoRA factors, checked against independent numpy computations (never mechalang's own formulas).

- A sum of scaled LoRAs is written by exact concatenation: baking the written LoRA equals baking the
  sum (fp32 rounding); its down factors are the inputs' downs, stacked, bit for bit.
- Anything else is factored by a truncated SVD: at a rank ≥ the delta's rank it reproduces the delta,
  below it it is the best approximation of that rank (Eckart–Young), as numpy's own SVD gives.
- kohya ↔ peft round trips (a hypothesis property), and PEFT itself loading the peft output.
- Errors, atomic output, `mecha fmt`, the safetensors metadata.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors import safe_open
from safetensors.numpy import load_file, save_file

from .conftest import close, mecha, write_adapter

# sd1 (dim_cap 8): kohya module name -> checkpoint key (written out here, not asked of the keymap)
SD1 = {
    "lora_unet_conv_in": "model.diffusion_model.input_blocks.0.0.weight",  # [8, 4, 3, 3]
    "lora_unet_down_blocks_0_resnets_0_conv1": "model.diffusion_model.input_blocks.1.0.in_layers.2.weight",  # 3×3
    "lora_unet_down_blocks_0_attentions_0_proj_in": "model.diffusion_model.input_blocks.1.1.proj_in.weight",  # 1×1
    "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q":
        "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight",  # [8, 8]
    "lora_te_text_model_encoder_layers_0_self_attn_q_proj":
        "cond_stage_model.transformer.text_model.encoder.layers.0.self_attn.q_proj.weight",  # [8, 8]
    "lora_te_text_model_encoder_layers_1_mlp_fc1":
        "cond_stage_model.transformer.text_model.encoder.layers.1.mlp.fc1.weight",
    "lora_unet_conv_out": "model.diffusion_model.out.2.weight",  # [4, 8, 3, 3]
    "lora_unet_mid_block_resnets_0_conv2": "model.diffusion_model.middle_block.0.out_layers.3.weight",  # 3×3
}
SD1_MODULES = list(SD1)
# llama (dim_cap 16): a model kohya has no names for; its own module paths are the names
LLAMA = {m: m + ".weight" for m in ("model.layers.0.self_attn.q_proj", "model.layers.0.self_attn.k_proj",
                                    "model.layers.0.mlp.down_proj", "model.layers.1.self_attn.v_proj",
                                    "model.layers.1.mlp.gate_proj", "lm_head")}
PEFT = "base_model.model."


def f64(x) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)


def as_matrix(x) -> np.ndarray:
    x = f64(x)
    return x.reshape(x.shape[0], -1)


def lora_delta(up, down, alpha, shape) -> np.ndarray:
    """(α/r)·U·D in float64, shaped like the target (kohya: α None or 0 means α = r)."""
    r = down.shape[0]
    scale = 1.0 if alpha is None or float(alpha) == 0 else float(alpha) / r
    return (scale * (as_matrix(up) @ as_matrix(down))).reshape(shape)


def best_rank(delta: np.ndarray, k: int) -> np.ndarray:
    """numpy's best rank-k approximation (Eckart–Young) of a delta, as a matrix [out, rest]."""
    u, s, vh = np.linalg.svd(as_matrix(delta), full_matrices=False)
    return (u[:, :k] * s[:k]) @ vh[:k]


def frob(x) -> float:
    return float(np.linalg.norm(f64(x)))


def make_lora(rng, base: dict, spec: dict[str, tuple[int, float | None]], names: dict[str, str]):
    """kohya tensors for {module: (rank, alpha or None)} and their deltas {key: ΔW} (float64).
    A conv's up is [out, r, 1, 1] and its down [r, in, k, k]."""
    tensors, deltas = {}, {}
    for module, (rank, alpha) in spec.items():
        key = names[module]
        shape = base[key].shape
        up = rng.standard_normal((shape[0], rank) + ((1, 1) if len(shape) == 4 else ())).astype(np.float32) * 0.3
        down = rng.standard_normal((rank,) + shape[1:]).astype(np.float32) * 0.3
        tensors[module + ".lora_up.weight"], tensors[module + ".lora_down.weight"] = up, down
        if alpha is not None:
            tensors[module + ".alpha"] = np.array(alpha, dtype=np.float32)
        deltas[key] = lora_delta(up, down, alpha, shape)
    return tensors, deltas


def run(folder: Path, text: str, models_dir: Path, name: str = "r"):
    """Run a recipe in-process; the result (its diagnostics when it failed)."""
    from mechalang import pipeline

    recipe = folder / f"{name}.mecha"
    recipe.write_text(text, encoding="utf-8")
    return pipeline.run(pipeline.load(recipe, models_dir=models_dir), overwrite=True)


def run_ok(folder: Path, text: str, models_dir: Path, name: str = "r"):
    result = run(folder, text, models_dir, name)
    assert result.ok, "\n".join(f"{d.code}: {d.message}" for d in result.diagnostics)
    return result


def read_kohya(path: Path) -> dict[str, tuple[np.ndarray, np.ndarray, float]]:
    """module -> (up, down, alpha) of a kohya file; every tensor accounted for."""
    t = load_file(str(path))
    modules = {n.rsplit(".", 1)[0] for n in t if n.endswith(".alpha")}
    out = {m: (t[m + ".lora_up.weight"], t[m + ".lora_down.weight"], float(t[m + ".alpha"].reshape(-1)[0]))
           for m in modules}
    assert len(t) == 3 * len(out), sorted(set(t) - {m + s for m in out for s in
                                                   (".alpha", ".lora_up.weight", ".lora_down.weight")})
    return out


def read_peft(path: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """module path (no prefix) -> (B, A) of a peft file; every tensor accounted for."""
    t = load_file(str(path))
    out = {}
    for n in t:
        assert n.startswith(PEFT) and n.endswith((".lora_A.weight", ".lora_B.weight")), n
        m = n[len(PEFT):].rsplit(".", 2)[0]
        out[m] = (t[PEFT + m + ".lora_B.weight"], t[PEFT + m + ".lora_A.weight"])
    assert len(t) == 2 * len(out)
    return out


def rebuilt(up, down, alpha: float, shape) -> np.ndarray:
    """What a kohya reader makes of written factors: (α/r)·U·D (checking the factor layout)."""
    r = down.shape[0]
    assert up.shape[1] == r, (up.shape, down.shape)
    if len(shape) == 4:
        assert up.shape == (shape[0], r, 1, 1) and down.shape == (r,) + tuple(shape[1:]), (up.shape, down.shape)
    else:
        assert up.shape == (shape[0], r) and down.shape == (r, shape[1]), (up.shape, down.shape)
    return lora_delta(up, down, alpha, shape)


def assert_bakes_equal(got: dict, want: dict, base: dict, what: str = "") -> None:
    """Two bakes of one base: the same keys, equal within fp32 rounding of |base| + |Δ|; a key
    neither changes is the base's, bit for bit."""
    assert set(got) == set(want) == set(base)
    for k, b in base.items():
        if np.array_equal(want[k], b):
            np.testing.assert_array_equal(got[k], b, err_msg=f"{what}{k}: must be the base's")
            continue
        scale = float(np.max(np.abs(b))) + float(np.max(np.abs(f64(want[k]) - f64(b))))
        close(got[k], f64(want[k]), tol=2e-6, scale=scale, what=f"{what}{k}")


# ------------------------------------------------------------------------------------------------
# concatenation: exact


CASES = {
    # base name, names, A's spec, B's spec (some modules in both, some in one)
    "sd1": ("sd1", SD1,
            {"lora_unet_conv_in": (2, 1.0), "lora_unet_down_blocks_0_resnets_0_conv1": (2, 1.0),
             "lora_unet_down_blocks_0_attentions_0_proj_in": (2, 4.0),
             "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q": (2, 1.0),
             "lora_te_text_model_encoder_layers_0_self_attn_q_proj": (2, 0.5)},
            {"lora_unet_down_blocks_0_resnets_0_conv1": (5, 3.0),
             "lora_unet_down_blocks_0_attentions_0_proj_in": (5, 3.0),
             "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q": (5, None),
             "lora_te_text_model_encoder_layers_0_self_attn_q_proj": (5, 0.0), "lora_unet_conv_out": (5, 2.0)}),
    "llama": ("llama", LLAMA,
              {"model.layers.0.self_attn.q_proj": (2, 1.0), "model.layers.0.self_attn.k_proj": (2, 4.0),
               "model.layers.0.mlp.down_proj": (2, 1.0), "lm_head": (2, 2.0)},
              {"model.layers.0.self_attn.q_proj": (5, 3.0), "model.layers.0.self_attn.k_proj": (5, 1.0),
               "model.layers.1.self_attn.v_proj": (5, 2.5), "lm_head": (5, None)}),
}


def setup_pair(tmp_path, bases, case: str, seed: int = 0):
    base_name, names, spec_a, spec_b = CASES[case]
    base = bases.tensors(base_name)
    rng = np.random.default_rng(seed)
    ta, da = make_lora(rng, base, spec_a, names)
    tb, db = make_lora(rng, base, spec_b, names)
    write_adapter(tmp_path / "a.safetensors", ta)
    write_adapter(tmp_path / "b.safetensors", tb)
    head = (f'let base = model("{bases.path(base_name).name}")\n'
            'let a = lora("a.safetensors", base=base)\nlet b = lora("b.safetensors", base=base)\n')
    return base, names, (spec_a, ta, da), (spec_b, tb, db), head


@pytest.mark.parametrize("case", ["sd1", "llama"])
def test_concatenation_equals_the_sum_of_bakes(tmp_path, bases, case):
    """`0.5 * a + b as lora()` (ranks 2 and 5, different α, conv and linear keys): baking the
    written LoRA equals baking `base + 0.5 * a + b`, and both equal base + 0.5·ΔA + ΔB."""
    base, names, (spec_a, ta, da), (spec_b, tb, db), head = setup_pair(tmp_path, bases, case)
    models = bases.path(CASES[case][0]).parent
    run_ok(tmp_path, head + 'export 0.5 * a + b to "ab.safetensors" as lora()\n'
                            'export base + 0.5 * a + b to "direct.safetensors"\n', models)
    run_ok(tmp_path, head + 'export base + lora("ab.safetensors", base=base) to "via.safetensors"\n', models, "r2")
    direct, via = load_file(str(tmp_path / "direct.safetensors")), load_file(str(tmp_path / "via.safetensors"))
    assert_bakes_equal(via, direct, base)
    # the independent reference
    for key in set(da) | set(db):
        ref = f64(base[key]) + 0.5 * da.get(key, 0) + db.get(key, 0)
        close(via[key], ref, tol=2e-6, scale=float(np.max(np.abs(ref))) + 1, what=key)
    # the factors: exact concatenation, ranks added, α = the total rank (scale 1), downs stacked bit for bit
    written = read_kohya(tmp_path / "ab.safetensors")
    assert set(written) == set(spec_a) | set(spec_b)
    for module, (up, down, alpha) in written.items():
        parts = [(c, spec, t) for c, spec, t in ((0.5, spec_a, ta), (1.0, spec_b, tb)) if module in spec]
        rank = sum(spec[module][0] for _, spec, _ in parts)
        assert down.shape[0] == rank and alpha == rank, (module, down.shape, alpha)
        np.testing.assert_array_equal(down, np.concatenate([t[module + ".lora_down.weight"] for _, _, t in parts]))
        ups = []
        for c, spec, t in parts:
            r, a = spec[module]
            scale = c * (r if a is None or a == 0 else a) / r
            ups.append(f64(t[module + ".lora_up.weight"]) * scale)
        close(up, np.concatenate(ups, axis=1), tol=1e-6, what=module + " up")
        key = names[module]
        close(rebuilt(up, down, alpha, base[key].shape), 0.5 * da.get(key, 0) + db.get(key, 0), tol=1e-5, what=key)


def test_map_coefficients_are_concatenated(tmp_path, bases):
    """`{default: 1, key("model.diffusion_model.*"): 0.3} * a + b`: each key's own coefficient is
    folded into its up factor; still exact, still no SVD (`as lora()` takes it)."""
    base, names, (spec_a, ta, da), (spec_b, tb, db), head = setup_pair(tmp_path, bases, "sd1", seed=1)
    expr = '{default: 1, key("model.diffusion_model.*"): 0.3, key("*layers.0.self_attn*"): -2} * a + b'
    models = bases.path("sd1").parent
    run_ok(tmp_path, head + f'export {expr} to "ab.safetensors" as lora()\n'
                            f'export base + ({expr}) to "direct.safetensors"\n', models)
    run_ok(tmp_path, head + 'export base + lora("ab.safetensors", base=base) to "via.safetensors"\n', models, "r2")
    direct, via = load_file(str(tmp_path / "direct.safetensors")), load_file(str(tmp_path / "via.safetensors"))
    assert_bakes_equal(via, direct, base)
    for key in set(da) | set(db):
        c = 0.3 if key.startswith("model.diffusion_model.") else -2.0 if "layers.0.self_attn" in key else 1.0
        ref = f64(base[key]) + c * da.get(key, 0) + db.get(key, 0)
        close(via[key], ref, tol=2e-6, scale=float(np.max(np.abs(ref))) + 1, what=key)
    written = read_kohya(tmp_path / "ab.safetensors")
    for module in set(spec_a) & set(spec_b):  # concatenated, not factored again
        assert written[module][1].shape[0] == spec_a[module][0] + spec_b[module][0]


def test_rank_option_concatenates_when_it_fits_and_factors_when_not(tmp_path, bases):
    """With rank=: a key whose LoRAs' total rank fits is concatenated (its own total rank); one
    above it is factored by SVD to exactly that rank, the best approximation numpy finds."""
    base, names, (spec_a, ta, da), (spec_b, tb, db), head = setup_pair(tmp_path, bases, "sd1", seed=2)
    models = bases.path("sd1").parent
    run_ok(tmp_path, head + 'export 0.5 * a + b to "r7.safetensors" as lora(rank=7)\n'
                            'export 0.5 * a + b to "r3.safetensors" as lora(rank=3)\n', models)
    r7, r3 = read_kohya(tmp_path / "r7.safetensors"), read_kohya(tmp_path / "r3.safetensors")
    for module in set(spec_a) | set(spec_b):
        key = names[module]
        total = spec_a.get(module, (0,))[0] + spec_b.get(module, (0,))[0]
        want = 0.5 * da.get(key, 0) + db.get(key, 0)
        up, down, alpha = r7[module]
        assert down.shape[0] == total  # concatenation keeps the inputs' total rank (never padded to 7)
        downs = [t[module + ".lora_down.weight"] for spec, t in ((spec_a, ta), (spec_b, tb)) if module in spec]
        np.testing.assert_array_equal(down, np.concatenate(downs))
        close(rebuilt(up, down, alpha, base[key].shape), want, tol=1e-5, what=module)
        up, down, alpha = r3[module]
        got = rebuilt(up, down, alpha, base[key].shape)
        if total <= 3:
            assert down.shape[0] == total
            np.testing.assert_array_equal(down, np.concatenate(downs))
            close(got, want, tol=1e-5, what=module)
        else:
            assert down.shape[0] == 3 and alpha == 3
            best = best_rank(want, 3)
            assert abs(frob(as_matrix(got) - as_matrix(want)) - frob(best - as_matrix(want))) <= 1e-5 * frob(want)
            assert frob(as_matrix(got) - best) <= 1e-4 * frob(want), module


def test_difference_of_loras_is_concatenated(tmp_path, bases):
    """`a - b` is a + (−1)·b: as exact as a sum."""
    base, names, (spec_a, ta, da), (spec_b, tb, db), head = setup_pair(tmp_path, bases, "llama", seed=3)
    run_ok(tmp_path, head + 'export a - b to "ab.safetensors" as lora()\n', bases.path("llama").parent)
    written = read_kohya(tmp_path / "ab.safetensors")
    for module, (up, down, alpha) in written.items():
        key = names[module]
        close(rebuilt(up, down, alpha, base[key].shape), da.get(key, 0) - db.get(key, 0), tol=1e-5, what=key)


# ------------------------------------------------------------------------------------------------
# SVD: exact at a rank ≥ the delta's, the best approximation below it


SVD_KEYS = [SD1[m] for m in ("lora_unet_conv_in", "lora_unet_down_blocks_0_resnets_0_conv1",
                             "lora_unet_down_blocks_0_attentions_0_proj_in",
                             "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q",
                             "lora_te_text_model_encoder_layers_0_self_attn_q_proj", "lora_unet_conv_out")]
R = 3  # the rank of the test's deltas


@pytest.fixture
def tuned(tmp_path, bases):
    """tuned = base + U·D (rank 3) on a few keys (3×3 and 1×1 convolutions, linear), the base elsewhere;
    returns (base tensors, {key: the delta as the files hold it, in float64})."""
    base = bases.tensors("sd1")
    rng = np.random.default_rng(7)
    t = dict(base)
    for key in SVD_KEYS:
        shape = base[key].shape
        u = rng.standard_normal((shape[0], R))
        d = rng.standard_normal((R, int(np.prod(shape[1:]))))
        t[key] = (f64(base[key]) + (u @ d).reshape(shape) * 0.5).astype(np.float32)
    save_file(t, str(tmp_path / "tuned.safetensors"))
    return base, {k: f64(t[k]) - f64(base[k]) for k in SVD_KEYS}


def test_svd_export_reproduces_a_low_rank_delta(tmp_path, bases, tuned):
    """`model("tuned") - base as lora(rank=r+2)`: every matrix and conv key of the model is written
    (at min(rank, dims)); the rebuilt (α/r)·U·D is the true delta within 1e-5 (Frobenius, relative),
    zero where the models agree; biases and norms are left out."""
    base, deltas = tuned
    run_ok(tmp_path, f'let base = model("{bases.path("sd1").name}")\n'
                     f'export model("tuned.safetensors") - base to "svd.safetensors" as lora(rank={R + 2})\n',
           bases.path("sd1").parent)
    written = read_kohya(tmp_path / "svd.safetensors")
    # one module per matrix or conv key of a module (no bias, no norm, no dot-less EMA copy)
    matrices = [k for k, v in base.items() if v.ndim in (2, 4) and v.dtype.kind == "f" and k.endswith(".weight")]
    assert len(written) == len(matrices)
    by_key = {SD1[m]: m for m in SD1}
    for key, delta in deltas.items():
        up, down, alpha = written[by_key[key]]
        rank = min(R + 2, base[key].shape[0], int(np.prod(base[key].shape[1:])))
        assert down.shape[0] == rank and alpha == rank, (key, down.shape, alpha)
        got = rebuilt(up, down, alpha, base[key].shape)
        assert frob(got - delta) <= 1e-5 * frob(delta), f"{key}: {frob(got - delta) / frob(delta):.3g}"
    zero = [m for m in written if SD1.get(m) not in deltas]
    for m in zero:
        up, down, alpha = written[m]
        assert not np.any(as_matrix(up) @ as_matrix(down)), f"{m}: the models agree there, the delta is 0"


def test_svd_below_the_rank_is_the_best_approximation(tmp_path, bases, tuned):
    """At rank k < r: the written factors approximate the delta as well as numpy's best rank-k
    approximation (Eckart–Young: the same Frobenius error), and are that approximation."""
    base, deltas = tuned
    run_ok(tmp_path, f'let base = model("{bases.path("sd1").name}")\n'
                     'export model("tuned.safetensors") - base to "k2.safetensors" as lora(rank=2)\n'
                     'export model("tuned.safetensors") - base to "k1.safetensors" as lora(rank=1, dialect="peft")\n',
           bases.path("sd1").parent)
    k2 = read_kohya(tmp_path / "k2.safetensors")
    k1 = read_peft(tmp_path / "k1.safetensors")
    by_key = {SD1[m]: m for m in SD1}
    for key, delta in deltas.items():
        for k, (up, down, alpha) in ((2, k2[by_key[key]]), (1, (*k1[key[:-len(".weight")]], 1.0))):
            assert down.shape[0] == k
            got = as_matrix(rebuilt(up, down, alpha, delta.shape))
            best = best_rank(delta, k)
            mat = as_matrix(delta)
            assert abs(frob(got - mat) - frob(best - mat)) <= 1e-5 * frob(delta), (key, k)
            assert frob(got - best) <= 1e-4 * frob(delta), (key, k)
    cfg = json.loads((tmp_path / "adapter_config.json").read_text())
    assert cfg["r"] == cfg["lora_alpha"] == 1 and not cfg["rank_pattern"]


def test_resizing_a_lora(tmp_path, bases):
    """`export lora("big") to … as lora(rank=2)` from a rank-6 LoRA (no base given): each module is
    numpy's best rank-2 approximation of the big LoRA's delta."""
    base = bases.tensors("sd1")
    spec = {m: (6, 3.0) for m in SD1_MODULES}
    tensors, deltas = make_lora(np.random.default_rng(3), base, spec, SD1)
    write_adapter(tmp_path / "big.safetensors", tensors)
    run_ok(tmp_path, 'export lora("big.safetensors") to "small.safetensors" as lora(rank=2)\n', tmp_path)
    small = read_kohya(tmp_path / "small.safetensors")
    assert set(small) == set(spec)
    for module, (up, down, alpha) in small.items():
        delta = deltas[SD1[module]]
        assert down.shape[0] == 2 and alpha == 2
        got = as_matrix(rebuilt(up, down, alpha, delta.shape))
        best = best_rank(delta, 2)
        assert abs(frob(got - as_matrix(delta)) - frob(best - as_matrix(delta))) <= 1e-5 * frob(delta), module
        assert frob(got - best) <= 1e-4 * frob(delta), module


def test_clamp_and_dtype(tmp_path, bases):
    """clamp=q clips both factors of each module at the q-quantile of their |entries| (kohya's
    extractor); dtype="fp16" writes the same factors in half precision."""
    base = bases.tensors("sd1")
    tensors, _ = make_lora(np.random.default_rng(4), base, {m: (6, 6.0) for m in SD1_MODULES}, SD1)
    write_adapter(tmp_path / "big.safetensors", tensors)
    run_ok(tmp_path, 'let big = lora("big.safetensors")\n'
                     'export big to "plain.safetensors" as lora(rank=3)\n'
                     'export big to "clamped.safetensors" as lora(rank=3, clamp=0.9)\n'
                     'export big to "half.safetensors" as lora(rank=3, dtype="fp16")\n', tmp_path)
    plain, clamped = read_kohya(tmp_path / "plain.safetensors"), read_kohya(tmp_path / "clamped.safetensors")
    half = load_file(str(tmp_path / "half.safetensors"))
    assert all(v.dtype == np.float16 for v in half.values())
    for module, (up, down, alpha) in plain.items():
        hi = np.quantile(np.abs(np.concatenate([up.ravel(), down.ravel()])).astype(np.float64), 0.9)
        cup, cdown, calpha = clamped[module]
        assert calpha == alpha
        # (the quantile is interpolated in fp32: within fp32 rounding of the gap between entries)
        close(cup, np.clip(f64(up), -hi, hi), tol=1e-5, what=module + " up")
        close(cdown, np.clip(f64(down), -hi, hi), tol=1e-5, what=module + " down")
        small = np.abs(up) < hi * 0.999  # entries under the quantile are untouched, bit for bit
        np.testing.assert_array_equal(cup[small], up[small])
        assert np.max(np.abs(f64(cup))) <= hi * (1 + 1e-5) and np.any(np.abs(up) > hi)
        close(half[module + ".lora_up.weight"], f64(up), what=module)
        close(half[module + ".lora_down.weight"], f64(down), what=module)
        assert float(half[module + ".alpha"].reshape(-1)[0]) == alpha


# ------------------------------------------------------------------------------------------------
# dialects: a round trip property, and PEFT itself


@settings(max_examples=3, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(spec=st.dictionaries(st.sampled_from(SD1_MODULES),
                            st.tuples(st.integers(1, 9), st.one_of(st.none(), st.just(0.0), st.floats(0.25, 16.0))),
                            min_size=1, max_size=5),
       strength=st.sampled_from([1.0, 0.5, -1.25]), seed=st.integers(0, 2**32 - 1))
def test_dialect_round_trip(bases, spec, strength, seed):
    """A random kohya LoRA x → `export S * lora(x) as lora()` (kohya) and `as lora(dialect="peft")`,
    and that peft file → kohya again: baking any of them equals baking S·x."""
    base = bases.tensors("sd1")
    tensors, deltas = make_lora(np.random.default_rng(seed), base, spec, SD1)
    with tempfile.TemporaryDirectory() as folder:
        d = Path(folder)
        for sub in ("k", "p", "z"):
            (d / sub).mkdir()
        write_adapter(d / "x.safetensors", tensors)
        head = f'let base = model("{bases.path("sd1").name}")\n'
        x = f'{strength} * lora("x.safetensors", base=base)'
        run_ok(d, head + f'export {x} to "k/y.safetensors" as lora()\n'
                         f'export {x} to "p/y.safetensors" as lora(dialect="peft")\n', bases.path("sd1").parent)
        run_ok(d, 'export lora("p/y.safetensors") to "z/y.safetensors" as lora()\n', d, "r2")
        peft = read_peft(d / "p" / "y.safetensors")
        assert set(peft) == {SD1[m][:-len(".weight")] for m in spec}
        assert set(read_kohya(d / "k" / "y.safetensors")) == set(read_kohya(d / "z" / "y.safetensors")) == set(spec)
        run_ok(d, head + f'export base + {x} to "bx.safetensors"\n'
                         + "".join(f'export base + lora("{s}/y.safetensors", base=base) to "b{s}.safetensors"\n'
                                   for s in ("k", "p", "z")), bases.path("sd1").parent, "r3")
        bx = load_file(str(d / "bx.safetensors"))
        for key, delta in deltas.items():
            ref = f64(base[key]) + strength * delta
            close(bx[key], ref, tol=2e-6, scale=float(np.max(np.abs(ref))) + 1, what=key)
        for s in ("k", "p", "z"):
            assert_bakes_equal(load_file(str(d / f"b{s}.safetensors")), bx, base, what=f"{s}: ")


def test_peft_output_loads_in_peft(tmp_path):
    """A native LoRA for a tiny transformers Llama, `0.5 * a + b` (ranks 4 and 4+2 on q_proj: a
    rank_pattern) exported `as lora(dialect="peft")` as adapter_model.safetensors: PEFT's
    `PeftModel.from_pretrained(...).merge_and_unload()` equals mecha's own bake."""
    pytest.importorskip("peft")
    pytest.importorskip("transformers")
    import warnings

    import torch
    from peft import PeftModel
    from transformers import LlamaConfig, LlamaForCausalLM

    from mechalang.synth import make_lora as synth_lora

    config = LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=4, vocab_size=128, max_position_embeddings=64, tie_word_embeddings=False)
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        LlamaForCausalLM(config).eval().save_pretrained(str(tmp_path / "base"), safe_serialization=True)
    base_file = tmp_path / "base" / "model.safetensors"
    synth_lora(base_file, tmp_path / "a.safetensors", rank=4, alpha=2.0, dialect="native", dtype="float32",
               seed=1, scale=0.1)
    synth_lora(base_file, tmp_path / "b.safetensors", rank=2, alpha=8.0, dialect="native", dtype="float32",
               seed=2, scale=0.1, targets=("*q_proj*",))
    (tmp_path / "ad").mkdir()
    run_ok(tmp_path, 'let base = model("base/model.safetensors")\n'
                     'let d = 0.5 * lora("a.safetensors", base=base) + lora("b.safetensors", base=base)\n'
                     'export d to "ad/adapter_model.safetensors" as lora(dialect="peft")\n'
                     'export base + d to "baked.safetensors"\n', tmp_path)
    cfg = json.loads((tmp_path / "ad" / "adapter_config.json").read_text())
    assert cfg["peft_type"] == "LORA" and cfg["r"] == cfg["lora_alpha"] == 6
    assert cfg["rank_pattern"] and all(v == 4 for v in cfg["rank_pattern"].values())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = LlamaForCausalLM.from_pretrained(str(tmp_path / "base"), torch_dtype=torch.float32)
        merged = PeftModel.from_pretrained(model, str(tmp_path / "ad")).merge_and_unload().state_dict()
    baked = load_file(str(tmp_path / "baked.safetensors"))
    base = load_file(str(base_file))
    changed = 0
    for key, got in baked.items():
        want = merged[key].detach().numpy()
        if np.array_equal(got, base[key]):
            np.testing.assert_array_equal(want, base[key], err_msg=key)
            continue
        changed += 1
        close(want, f64(got), tol=2e-6, scale=float(np.max(np.abs(got))) + 1e-3, what=key)
    assert changed == 14  # q, k, v, o, gate, up, down of both layers


# ------------------------------------------------------------------------------------------------
# errors: exit 1, the code, no traceback, nothing written


ERRORS = [  # (statement, code, what the message names)
    ('export base to "o1.safetensors" as lora(rank=4)', "E0240", "Delta"),
    ('export lora("d.safetensors", base=base) to "o2.safetensors" as lora()', "E0219",
     "`model.layers.0.self_attn.q_proj.weight`"),
    ('export lora("a.safetensors", base=base) to "o3.safetensors" as lora(rank=0)', "E0222", "rank"),
    ('export lora("a.safetensors", base=base) to "o4.safetensors" as lora(dialect="xyz")', "E0222", "xyz"),
    ('export lora("a.safetensors", base=base) to "o5.safetensors" as lora(clamp=2)', "E0222", "clamp"),
    ('export lora("a.safetensors", base=base) to "o6.safetensors" as lora(rnk=4)', "E0218", "rnk"),
]


def test_errors(tmp_path, bases):
    """`mecha run` of a recipe with one bad LoRA export per line (and a good one): exit 1, each
    line's error with its code and what it names, no traceback, and nothing written at all."""
    base = bases.tensors("llama")
    q = "model.layers.0.self_attn.q_proj"
    write_adapter(tmp_path / "a.safetensors", make_lora(np.random.default_rng(0), base, {q: (2, 1.0)}, LLAMA)[0])
    # a full-weight `diff` group on one key: a delta that is not a LoRA, so only an SVD could write it
    write_adapter(tmp_path / "d.safetensors", {q + ".diff": np.ones(base[q + ".weight"].shape, np.float32)})
    lines = [f'let base = model("{bases.path("llama").name}")'] + [stmt for stmt, _, _ in ERRORS]
    lines.append('export lora("a.safetensors", base=base) to "good.safetensors" as lora()')
    (tmp_path / "r.mecha").write_text("\n".join(lines) + "\n")
    res = mecha("run", "r.mecha", "--models-dir", str(bases.path("llama").parent), cwd=tmp_path)
    assert res.rc == 1, res.text
    assert "Traceback" not in res.text and "internal error" not in res.text, res.text
    err = res.stderr.splitlines()
    found = {}  # line of the recipe -> the error's first line
    for i, ln in enumerate(err):
        if ln.startswith("error[") and i + 1 < len(err) and "--> r.mecha:" in err[i + 1]:
            found[int(err[i + 1].split("r.mecha:")[1].split(":")[0])] = ln
    assert len(found) == len(ERRORS), res.text
    for n, (stmt, code, named) in enumerate(ERRORS, start=2):
        assert found.get(n, "").startswith(f"error[{code}]"), (n, stmt, found.get(n), res.text)
        assert named in found[n], (found[n], named)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.safetensors", "d.safetensors", "r.mecha"]


def test_failed_run_is_atomic(tmp_path, bases):
    """An SVD that fails at run time (a NaN in one key): E0601, and neither output, nor the peft
    adapter_config.json, nor a temporary file is written; an output there before is left as it was."""
    base = dict(bases.tensors("sd1"))
    key = SD1["lora_unet_down_blocks_0_resnets_0_conv1"]
    bad = base[key].copy()
    bad[0, 0, 0, 0] = np.nan
    save_file({**base, key: bad}, str(tmp_path / "nan.safetensors"))
    (tmp_path / "p").mkdir()
    (tmp_path / "k.safetensors").write_bytes(b"old")
    before = sorted(str(p) for p in tmp_path.rglob("*"))
    result = run(tmp_path, f'let base = model("{bases.path("sd1").name}")\n'
                           'let d = model("nan.safetensors") - base\n'
                           'export d to "k.safetensors" as lora(rank=2)\n'
                           'export d to "p/y.safetensors" as lora(rank=2, dialect="peft")\n', bases.path("sd1").parent)
    assert not result.ok
    assert "E0601" in [d.code for d in result.diagnostics], [(d.code, d.message) for d in result.diagnostics]
    assert sorted(str(p) for p in tmp_path.rglob("*")) == before + [str(tmp_path / "r.mecha")]
    assert (tmp_path / "k.safetensors").read_bytes() == b"old"


# ------------------------------------------------------------------------------------------------
# fmt, metadata


def test_fmt_keeps_the_format(tmp_path):
    from mechalang.commands.fmt import fmt_command
    from mechalang.syntax.fmt import format_text
    from mechalang.syntax.parser import parse
    from mechalang.syntax.printer import print_module

    ugly = ('let base=model( "b.safetensors" )\n'
            'export   model("t.safetensors")-base to "x.safetensors"   as lora( rank = 32 , dialect = "peft" )\n'
            'export lora("a.safetensors") to "y.safetensors" as lora( )\n'
            'export lora("a.safetensors") to "z.safetensors" as lora(rank=4,dtype="fp16",clamp=0.99)\n')
    path = tmp_path / "f.mecha"
    path.write_text(ugly)
    import io

    assert fmt_command([str(path)], check=False, diff=False, format="text", stdout=io.StringIO(),
                       stderr=io.StringIO()) == 0
    text = path.read_text()
    assert 'as lora(rank=32, dialect="peft")\n' in text
    assert 'to "y.safetensors" as lora()\n' in text
    assert 'as lora(rank=4, dtype="fp16", clamp=0.99)\n' in text
    assert format_text(text) == (text, [])
    module, diags = parse(text, "f.mecha")
    assert not diags and print_module(module) == text


def test_metadata(tmp_path, bases):
    """kohya: ss_network_dim/alpha (the largest rank; α = rank everywhere), ss_network_module,
    mechalang's provenance (the recipe itself). peft: adapter_config.json with r = lora_alpha."""
    _, names, (spec_a, *_), (spec_b, *_), head = setup_pair(tmp_path, bases, "sd1")
    (tmp_path / "p").mkdir()
    text = (head + 'export 0.5 * a + b to "ab.safetensors" as lora()\n'
            'export 0.5 * a + b to "p/ab.safetensors" as lora(dialect="peft")\n')
    run_ok(tmp_path, text, bases.path("sd1").parent)
    with safe_open(str(tmp_path / "ab.safetensors"), "np") as f:
        meta = f.metadata()
    top = max(spec_a.get(m, (0,))[0] + spec_b.get(m, (0,))[0] for m in set(spec_a) | set(spec_b))
    assert meta["ss_network_dim"] == meta["ss_network_alpha"] == str(top) == "7"
    assert meta["ss_network_module"] == "networks.lora"
    assert meta["mechalang.recipe"] == text
    assert "mechalang.version" in meta
    cfg = json.loads((tmp_path / "p" / "adapter_config.json").read_text())
    assert cfg["peft_type"] == "LORA" and cfg["r"] == cfg["lora_alpha"] == 7
    ranks = {m: spec_a.get(m, (0,))[0] + spec_b.get(m, (0,))[0] for m in set(spec_a) | set(spec_b)}
    assert cfg["rank_pattern"] == {names[m][:-len(".weight")]: r for m, r in ranks.items() if r != 7}
    assert cfg["alpha_pattern"] == cfg["rank_pattern"]
    assert not (tmp_path / "adapter_config.json").exists()  # only beside the peft output
