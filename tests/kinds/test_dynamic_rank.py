"""Dynamic LoRA ranks: `as lora(rank=R, sv_ratio=|sv_fro=|sv_cumulative=)` keeps, per key, the
number of singular values the rule chooses (at most R), computed here independently with numpy
from the true delta; the file holds each module at that rank, and rebuilds the best approximation
of that rank."""

from __future__ import annotations

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from mechalang import pipeline
from mechalang.synth import make_model


def expected_rank(s: np.ndarray, rule: str, v: float, cap: int) -> int:
    if rule == "sv_ratio":
        n = int(np.sum(s >= s[0] / v))
    elif rule == "sv_fro":
        n = int(np.sum(np.sqrt(np.cumsum(s ** 2) / np.sum(s ** 2)) < v)) + 1
    else:
        n = int(np.sum(np.cumsum(s) / np.sum(s) < v)) + 1
    return max(1, min(n, cap))


@pytest.fixture
def models(tmp_path):
    make_model("llama", tmp_path / "base.safetensors", dim_cap=16, dtype="float32", seed=1)
    base = load_file(str(tmp_path / "base.safetensors"))
    rng = np.random.default_rng(3)
    tuned = {}
    for i, (k, v) in enumerate(base.items()):
        if v.ndim == 2:  # a delta with a decaying spectrum: the rules choose different ranks per key
            u, _ = np.linalg.qr(rng.standard_normal((v.shape[0], v.shape[0])))
            w, _ = np.linalg.qr(rng.standard_normal((v.shape[1], v.shape[1])))
            s = np.geomspace(1.0, 1e-3 * (1 + i % 5), min(v.shape))
            v = v + (u[:, :len(s)] * s) @ w[:, :len(s)].T
        tuned[k] = v.astype(np.float32)
    save_file(tuned, str(tmp_path / "tuned.safetensors"))
    return base, tuned


@pytest.mark.parametrize("rule, value", [("sv_ratio", 20.0), ("sv_fro", 0.9), ("sv_cumulative", 0.7)])
def test_dynamic_rank_follows_the_rule(tmp_path, models, rule, value):
    base, tuned = models
    cap = 10
    (tmp_path / "r.mecha").write_text(f'export model("tuned.safetensors") - model("base.safetensors") to '
                                      f'"dyn.safetensors" as lora(rank={cap}, {rule}={value})\n')
    result = pipeline.run(pipeline.load(tmp_path / "r.mecha"))
    assert result.ok, result.diagnostics
    out = load_file(str(tmp_path / "dyn.safetensors"))
    ranks = set()
    for k, v in base.items():
        if v.ndim != 2:
            continue
        m = k[: -len(".weight")]
        delta = tuned[k].astype(np.float64) - v.astype(np.float64)
        s = np.linalg.svd(delta, compute_uv=False)
        r = expected_rank(s, rule, value, cap)
        up, down, alpha = out[m + ".lora_up.weight"], out[m + ".lora_down.weight"], out[m + ".alpha"]
        assert up.shape == (v.shape[0], r) and down.shape == (r, v.shape[1]) and float(alpha) == r
        rebuilt = (float(alpha) / r) * up.astype(np.float64) @ down.astype(np.float64)
        u, s_, wt = np.linalg.svd(delta)
        best = (u[:, :r] * s_[:r]) @ wt[:r]
        assert np.linalg.norm(rebuilt - best) <= 1e-4 * np.linalg.norm(delta)
        ranks.add(r)
    assert len(ranks) > 1  # the rule chose per key


@pytest.mark.parametrize("options, code", [
    ("sv_ratio=4", "E0219"),  # no rank= cap
    ("rank=4, sv_ratio=0.5", "E0222"),
    ("rank=4, sv_fro=1.5", "E0222"),
    ("rank=4, sv_ratio=4, sv_fro=0.9", "E0222"),
    ('rank=4, sv_ratio=4, dialect="peft"', "E0222"),
])
def test_dynamic_rank_options_are_checked(tmp_path, models, options, code):
    (tmp_path / "r.mecha").write_text(f'export model("tuned.safetensors") - model("base.safetensors") to '
                                      f'"dyn.safetensors" as lora({options})\n')
    checked = pipeline.check(pipeline.load(tmp_path / "r.mecha"))
    assert not checked.ok and code in {d.code for d in checked.diagnostics}
