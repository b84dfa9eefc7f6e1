"""Every built-in adapter kind, baked into a synthetic base through a real recipe run, compared key
by key with an independent float64 numpy computation of the published formula (never with
mechalang's own functions).

Each case writes an adapter file from random tensors, runs
`export base + S * lora("a.safetensors", base=base)`, and checks EVERY output key: the keys the
adapter updates equal base + S·ΔW, every other key is the base's tensor unchanged."""

from __future__ import annotations

import tempfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .conftest import assert_matches, close, write_adapter

S = 0.7  # the strength every case bakes with
LORA = f'base + {S} * lora("a.safetensors", base=base)'

# llama (dim_cap 16): q/o/gate/up/down [16, 16], k/v [8, 16]
Q = "model.layers.0.self_attn.q_proj"
K = "model.layers.0.self_attn.k_proj"
V = "model.layers.0.self_attn.v_proj"
O = "model.layers.0.self_attn.o_proj"
Q1 = "model.layers.1.self_attn.q_proj"
K1 = "model.layers.1.self_attn.k_proj"
# sd1 (dim_cap 8): a 3×3 and a 1×1 convolution
CONV3 = "model.diffusion_model.input_blocks.1.0.in_layers.2"  # [8, 8, 3, 3]
CONV1 = "model.diffusion_model.input_blocks.1.1.proj_in"  # [8, 8, 1, 1]
TO_Q = "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn1.to_q"  # [8, 8]
TE_Q = "cond_stage_model.transformer.text_model.encoder.layers.0.self_attn.q_proj"


def f64(x) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)


# ------------------------------------------------------------------------------------------------
# the published formulas, in float64


def lora_delta(up, down, alpha=None, mid=None) -> np.ndarray:
    up, down = f64(up), f64(down)
    r = down.shape[0]
    scale = 1.0 if alpha is None else float(alpha) / r
    u = up.reshape(up.shape[0], -1)  # [out, r] (a 1×1 conv's [out, r, 1, 1] too)
    if mid is not None:  # ΔW[p,c,k,l] = Σ_ij U[p,i]·M[i,j,k,l]·D[j,c]
        return scale * np.einsum("pi,ijkl,jc->pckl", u, f64(mid), down.reshape(r, -1))
    return scale * (u @ down.reshape(r, -1)).reshape((up.shape[0],) + down.shape[1:])


def dora_delta(w, dw, m) -> np.ndarray:
    """m·(W+ΔW)/‖W+ΔW‖ − W; the norm per output row for m [out, 1] or [out], per input column for
    m [1, in]."""
    w, m = f64(w), f64(m)
    merged = w + dw
    if m.ndim == 2 and m.shape[0] == 1 and w.shape[0] != 1:
        norm = np.sqrt(np.sum(merged ** 2, axis=0, keepdims=True))
        return m.reshape(1, -1) * merged / norm - w
    norm = np.sqrt(np.sum(merged.reshape(w.shape[0], -1) ** 2, axis=1))
    return (m.reshape(-1) / norm).reshape((-1,) + (1,) * (w.ndim - 1)) * merged - w


def tucker(t, wa, wb) -> np.ndarray:
    return np.einsum("ijkl,ip,jr->prkl", f64(t), f64(wa), f64(wb))


def loha_delta(w1a, w1b, w2a, w2b, alpha, t1=None, t2=None) -> np.ndarray:
    r = w1b.shape[0]
    if t1 is None:
        f1, f2 = f64(w1a) @ f64(w1b), f64(w2a) @ f64(w2b)
    else:
        f1, f2 = tucker(t1, w1a, w1b), tucker(t2, w2a, w2b)
    return float(alpha) / r * f1 * f2


def lokr_delta(w1, w2, scale) -> np.ndarray:
    w1, w2 = f64(w1), f64(w2)
    if w2.ndim == 4:
        w1 = w1[:, :, None, None]
    return scale * np.kron(w1, w2)


def ia3_delta(w, vec, on_input: bool) -> np.ndarray:
    w, vec = f64(w), f64(vec)
    return w * vec[None, :] if on_input else w * vec[:, None]


def oft_delta(w, blocks, alpha=0.0, rescale=None) -> np.ndarray:
    w, blocks = f64(w), f64(blocks)
    n, b, _ = blocks.shape
    q = blocks - blocks.transpose(0, 2, 1)
    norm = np.sqrt(np.sum(q ** 2))  # over all blocks together
    if alpha > 0 and norm > alpha:
        q = q * (alpha / norm)
    eye = np.eye(b)
    rot = [(eye + q[k]) @ np.linalg.inv(eye - q[k]) for k in range(n)]
    wb = w.reshape(n, b, -1)
    out = np.stack([rot[k].T @ wb[k] for k in range(n)]).reshape(w.shape)
    if rescale is not None:
        out = out * f64(rescale).reshape((-1,) + (1,) * (w.ndim - 1))
    return out - w


# ------------------------------------------------------------------------------------------------
# cases: (base, adapter tensors, expected ΔW per checkpoint key)


@dataclass
class Built:
    tensors: dict[str, np.ndarray]
    deltas: dict[str, np.ndarray]  # checkpoint key -> ΔW at strength 1 (float64)
    warnings: set[str] = field(default_factory=set)  # diagnostic codes the run must report


class Gen:
    """Random adapter tensors in the adapter's dtype; the references use exactly these values."""

    def __init__(self, seed: int, dtype) -> None:
        self.rng = np.random.default_rng(seed)
        self.dtype = dtype

    def __call__(self, *shape: int, scale: float = 0.5) -> np.ndarray:
        return (self.rng.standard_normal(shape) * scale).astype(self.dtype)

    def pos(self, *shape: int) -> np.ndarray:
        return self.rng.uniform(0.5, 2.0, shape).astype(self.dtype)

    def scalar(self, value: float) -> np.ndarray:
        return np.array(value, dtype=self.dtype)


@dataclass
class Case:
    name: str
    base: str
    build: Callable[[Gen, dict[str, np.ndarray]], Built]
    dtype: type = np.float32


def w(base, module):
    return base[module + ".weight"]


def c_lora_linear(g, base):
    t, d = {}, {}
    for mod, r, alpha, (out, inn) in ((Q, 4, 2.0, (16, 16)), (K, 3, 5.0, (8, 16))):
        t[mod + ".lora_up.weight"], t[mod + ".lora_down.weight"] = g(out, r), g(r, inn)
        t[mod + ".alpha"] = g.scalar(alpha)
        d[mod + ".weight"] = lora_delta(t[mod + ".lora_up.weight"], t[mod + ".lora_down.weight"], alpha)
    return Built(t, d)


def c_lora_no_alpha(g, base):
    t = {Q + ".lora_up.weight": g(16, 4), Q + ".lora_down.weight": g(4, 16)}
    return Built(t, {Q + ".weight": lora_delta(t[Q + ".lora_up.weight"], t[Q + ".lora_down.weight"])},
                 warnings={"W0275"})


def c_lora_conv(g, base):
    t, d = {}, {}
    for mod, r, alpha, k in ((CONV3, 3, 1.5, 3), (CONV1, 2, 2.0, 1)):
        t[mod + ".lora_down.weight"], t[mod + ".lora_up.weight"] = g(r, 8, k, k), g(8, r, 1, 1)
        t[mod + ".alpha"] = g.scalar(alpha)
        d[mod + ".weight"] = lora_delta(t[mod + ".lora_up.weight"], t[mod + ".lora_down.weight"], alpha)
    return Built(t, d)


def c_lora_tucker(g, base):
    r = 3
    t = {CONV3 + ".lora_down.weight": g(r, 8, 1, 1), CONV3 + ".lora_mid.weight": g(r, r, 3, 3),
         CONV3 + ".lora_up.weight": g(8, r, 1, 1), CONV3 + ".alpha": g.scalar(3.0)}
    return Built(t, {CONV3 + ".weight": lora_delta(t[CONV3 + ".lora_up.weight"], t[CONV3 + ".lora_down.weight"],
                                                   3.0, mid=t[CONV3 + ".lora_mid.weight"])})


def c_lora_kohya_sd1(g, base):
    """kohya names (diffusers-style module paths) for the UNet and the text encoder."""
    names = {"lora_unet_down_blocks_0_attentions_0_proj_in": (CONV1, (8, 2, 1, 1), (2, 8, 1, 1)),
             "lora_unet_down_blocks_0_resnets_0_conv1": (CONV3, (8, 2, 1, 1), (2, 8, 3, 3)),
             "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q": (TO_Q, (8, 2), (2, 8)),
             "lora_te_text_model_encoder_layers_0_self_attn_q_proj": (TE_Q, None, None)}
    t, d = {}, {}
    for name, (mod, ushape, dshape) in names.items():
        if ushape is None:
            out, inn = w(base, mod).shape
            ushape, dshape = (out, 2), (2, inn)
        t[name + ".lora_up.weight"], t[name + ".lora_down.weight"] = g(*ushape), g(*dshape)
        t[name + ".alpha"] = g.scalar(1.0)
        d[mod + ".weight"] = lora_delta(t[name + ".lora_up.weight"], t[name + ".lora_down.weight"], 1.0)
    return Built(t, d)


def _dora(g, base, magnitudes):
    t, d = {}, {}
    for mod, (out, inn), mshape in magnitudes:
        up, down = g(out, 2), g(2, inn)
        t.update({mod + ".lora_up.weight": up, mod + ".lora_down.weight": down, mod + ".alpha": g.scalar(1.0),
                  mod + ".dora_scale": g.pos(*mshape)})
        d[mod + ".weight"] = dora_delta(w(base, mod), lora_delta(up, down, 1.0), t[mod + ".dora_scale"])
    return Built(t, d)


def c_dora_rows(g, base):
    return _dora(g, base, [(Q, (16, 16), (16, 1)), (K, (8, 16), (8, 1))])


def c_dora_columns(g, base):
    return _dora(g, base, [(Q, (16, 16), (1, 16)), (K, (8, 16), (1, 16))])


def c_dora_1d(g, base):
    return _dora(g, base, [(K, (8, 16), (8,))])


def c_loha(g, base):
    t, d = {}, {}
    for mod, r, alpha, (out, inn) in ((Q, 3, 1.5, (16, 16)), (K, 2, 4.0, (8, 16))):
        p = {"hada_w1_a": g(out, r), "hada_w1_b": g(r, inn), "hada_w2_a": g(out, r), "hada_w2_b": g(r, inn)}
        t.update({f"{mod}.{k}": v for k, v in p.items()})
        t[mod + ".alpha"] = g.scalar(alpha)
        d[mod + ".weight"] = loha_delta(p["hada_w1_a"], p["hada_w1_b"], p["hada_w2_a"], p["hada_w2_b"], alpha)
    return Built(t, d)


def c_loha_tucker(g, base):
    r = 2
    p = {k: g(*shape, scale=0.7) for k, shape in (("hada_t1", (r, r, 3, 3)), ("hada_w1_a", (r, 8)),
                                                  ("hada_w1_b", (r, 8)), ("hada_t2", (r, r, 3, 3)),
                                                  ("hada_w2_a", (r, 8)), ("hada_w2_b", (r, 8)))}
    t = {f"{CONV3}.{k}": v for k, v in p.items()}
    t[CONV3 + ".alpha"] = g.scalar(4.0)
    return Built(t, {CONV3 + ".weight": loha_delta(p["hada_w1_a"], p["hada_w1_b"], p["hada_w2_a"], p["hada_w2_b"],
                                                   4.0, t1=p["hada_t1"], t2=p["hada_t2"])})


def c_lokr_w1_full(g, base):
    """lokr_w1 whole, lokr_w2 low-rank: s = α / rows of lokr_w2_b."""
    t, d = {}, {}
    for mod, w1shape, out2, in2 in ((Q, (4, 4), 4, 4), (K, (2, 4), 4, 4)):
        p = {"lokr_w1": g(*w1shape), "lokr_w2_a": g(out2, 2), "lokr_w2_b": g(2, in2)}
        t.update({f"{mod}.{k}": v for k, v in p.items()})
        t[mod + ".alpha"] = g.scalar(4.0)
        d[mod + ".weight"] = lokr_delta(p["lokr_w1"], f64(p["lokr_w2_a"]) @ f64(p["lokr_w2_b"]), 4.0 / 2)
    return Built(t, d)


def c_lokr_w2_full(g, base):
    """lokr_w1 low-rank, lokr_w2 whole: s = α / rows of lokr_w1_b."""
    p = {"lokr_w1_a": g(4, 2), "lokr_w1_b": g(2, 4), "lokr_w2": g(4, 4)}
    t = {f"{Q}.{k}": v for k, v in p.items()}
    t[Q + ".alpha"] = g.scalar(3.0)
    return Built(t, {Q + ".weight": lokr_delta(f64(p["lokr_w1_a"]) @ f64(p["lokr_w1_b"]), p["lokr_w2"], 3.0 / 2)})


def c_lokr_both_full(g, base):
    """Both factors whole: s = 1, whatever alpha says."""
    p = {"lokr_w1": g(4, 4), "lokr_w2": g(4, 4)}
    t = {f"{Q}.{k}": v for k, v in p.items()}
    t[Q + ".alpha"] = g.scalar(7.0)
    p2 = {"lokr_w1": g(2, 4), "lokr_w2": g(4, 4)}
    t.update({f"{K}.{k}": v for k, v in p2.items()})
    return Built(t, {Q + ".weight": lokr_delta(p["lokr_w1"], p["lokr_w2"], 1.0),
                     K + ".weight": lokr_delta(p2["lokr_w1"], p2["lokr_w2"], 1.0)})


def c_lokr_conv_tucker(g, base):
    r = 2
    p = {"lokr_w1": g(2, 2), "lokr_t2": g(r, r, 3, 3), "lokr_w2_a": g(r, 4), "lokr_w2_b": g(r, 4)}
    t = {f"{CONV3}.{k}": v for k, v in p.items()}
    t[CONV3 + ".alpha"] = g.scalar(1.0)
    w2 = tucker(p["lokr_t2"], p["lokr_w2_a"], p["lokr_w2_b"])
    return Built(t, {CONV3 + ".weight": lokr_delta(p["lokr_w1"], w2, 1.0 / r)})


def _ia3(g, base, on_input: bool):
    t, d = {}, {}
    for mod in (Q, K):
        out, inn = w(base, mod).shape
        vec = g(inn if on_input else out)
        t[mod + ".weight"], t[mod + ".on_input"] = vec, np.array(on_input)
        d[mod + ".weight"] = ia3_delta(w(base, mod), vec, on_input)
    return Built(t, d)


def c_ia3_out(g, base):
    return _ia3(g, base, False)


def c_ia3_in(g, base):
    return _ia3(g, base, True)


def c_diff(g, base):
    t = {Q + ".diff": g(16, 16), K + ".diff": g(8, 16)}
    return Built(t, {Q + ".weight": f64(t[Q + ".diff"]), K + ".weight": f64(t[K + ".diff"])})


def c_diff_conv_and_bias(g, base):
    t = {CONV3 + ".diff": g(8, 8, 3, 3), CONV1 + ".diff_b": g(8), CONV3 + ".diff_b": g(8)}
    return Built(t, {CONV3 + ".weight": f64(t[CONV3 + ".diff"]), CONV1 + ".bias": f64(t[CONV1 + ".diff_b"]),
                     CONV3 + ".bias": f64(t[CONV3 + ".diff_b"])})


def _oft(g, base, alpha_of_norm: float | None, rescale: bool = False, modules=((Q, 4), (K, 2))):
    t, d = {}, {}
    for mod, n in modules:
        wt = w(base, mod)
        blocks = g(n, wt.shape[0] // n, wt.shape[0] // n, scale=0.3)
        t[mod + ".oft_blocks"] = blocks
        alpha = 0.0
        if alpha_of_norm is not None:  # the file's alpha is per output row: the bound is alpha·out
            q = f64(blocks) - f64(blocks).transpose(0, 2, 1)
            t[mod + ".alpha"] = g.scalar(float(np.sqrt(np.sum(q ** 2)) * alpha_of_norm) / wt.shape[0])
            alpha = float(t[mod + ".alpha"]) * wt.shape[0]
        scale = None
        if rescale:
            scale = t[mod + ".rescale"] = g.pos(wt.shape[0], *(1,) * (wt.ndim - 1))
        d[mod + ".weight"] = oft_delta(wt, blocks, alpha, scale)
    return Built(t, d)


def boft_delta(w, blocks, bound=0.0, rescale=None) -> np.ndarray:
    """Butterfly OFT with explicit row permutations: stage i gathers the rows in the order that pairs
    runs of k = 2^i·b/2 rows, rotates each block of b gathered rows by its Cayley transform, and
    scatters them back."""
    w, blocks = f64(w), f64(blocks)
    stages, n, b, _ = blocks.shape
    q = blocks - blocks.transpose(0, 1, 3, 2)
    norm = np.sqrt(np.sum(q ** 2))
    if bound > 0 and norm > bound:
        q = q * (bound / norm)
    eye = np.eye(b)
    out = w.copy()
    rows = out.shape[0]
    for i in range(stages):
        k = 2 ** i * b // 2
        order = np.arange(rows).reshape(-1, 2, k).transpose(0, 2, 1).reshape(-1)
        gathered = out[order].reshape(n, b, -1)
        rotated = np.stack([((eye + q[i, j]) @ np.linalg.inv(eye - q[i, j])) @ gathered[j] for j in range(n)])
        new = np.empty_like(out)
        new[order] = rotated.reshape(out.shape)
        out = new
    if rescale is not None:
        out = out * f64(rescale).reshape((-1,) + (1,) * (w.ndim - 1))
    return out - w


def _boft(g, base, alpha_of_norm: float | None, modules=((Q, 2), (K, 2))):
    t, d = {}, {}
    for mod, stages in modules:
        wt = w(base, mod)
        size = 4
        blocks = g(stages, wt.shape[0] // size, size, size, scale=0.3)
        t[mod + ".oft_blocks"] = blocks
        bound = 0.0
        if alpha_of_norm is not None:
            q = f64(blocks) - f64(blocks).transpose(0, 1, 3, 2)
            t[mod + ".alpha"] = g.scalar(float(np.sqrt(np.sum(q ** 2)) * alpha_of_norm) / wt.shape[0])
            bound = float(t[mod + ".alpha"]) * wt.shape[0]
        d[mod + ".weight"] = boft_delta(wt, blocks, bound)
    return Built(t, d)


def c_boft(g, base):
    return _boft(g, base, None)


def c_boft_constrained(g, base):
    return _boft(g, base, 0.5)


def c_oft_alpha0(g, base):
    return _oft(g, base, 0.0)


def c_oft_constrained(g, base):
    return _oft(g, base, 0.5)  # ‖Q‖ is twice the constraint: Q is scaled down


def c_oft_loose(g, base):
    return _oft(g, base, 2.0)  # the constraint is not reached: Q is kept


def c_oft_rescale(g, base):
    return _oft(g, base, None, rescale=True)


def c_oft_conv(g, base):
    return _oft(g, base, 0.0, modules=((CONV3, 2),))


def c_mixed(g, base):
    """One file, a module of each kind: LoRA, LoHa, (IA)³, OFT."""
    t = {Q + ".lora_up.weight": g(16, 2), Q + ".lora_down.weight": g(2, 16), Q + ".alpha": g.scalar(4.0),
         K + ".hada_w1_a": g(8, 2), K + ".hada_w1_b": g(2, 16), K + ".hada_w2_a": g(8, 2), K + ".hada_w2_b": g(2, 16),
         K + ".alpha": g.scalar(6.0),
         V + ".weight": g(8), V + ".on_input": np.array(False),
         O + ".oft_blocks": g(2, 8, 8, scale=0.2)}
    return Built(t, {
        Q + ".weight": lora_delta(t[Q + ".lora_up.weight"], t[Q + ".lora_down.weight"], 4.0),
        K + ".weight": loha_delta(t[K + ".hada_w1_a"], t[K + ".hada_w1_b"], t[K + ".hada_w2_a"], t[K + ".hada_w2_b"],
                                  6.0),
        V + ".weight": ia3_delta(w(base, V), t[V + ".weight"], False),
        O + ".weight": oft_delta(w(base, O), t[O + ".oft_blocks"]),
    })


CASES = [
    Case("lora_linear", "llama", c_lora_linear),
    Case("lora_no_alpha", "llama", c_lora_no_alpha),
    Case("lora_conv", "sd1", c_lora_conv),
    Case("lora_tucker", "sd1", c_lora_tucker),
    Case("lora_kohya_sd1", "sd1", c_lora_kohya_sd1),
    Case("dora_rows", "llama", c_dora_rows),
    Case("dora_columns", "llama", c_dora_columns),
    Case("dora_1d", "llama", c_dora_1d),
    Case("loha", "llama", c_loha),
    Case("loha_tucker", "sd1", c_loha_tucker),
    Case("lokr_w1_full", "llama", c_lokr_w1_full),
    Case("lokr_w2_full", "llama", c_lokr_w2_full),
    Case("lokr_both_full", "llama", c_lokr_both_full),
    Case("lokr_conv_tucker", "sd1", c_lokr_conv_tucker),
    Case("ia3_out", "llama", c_ia3_out),
    Case("ia3_in", "llama", c_ia3_in),
    Case("diff", "llama", c_diff),
    Case("diff_conv_and_bias", "sd1", c_diff_conv_and_bias),
    Case("oft_alpha0", "llama", c_oft_alpha0),
    Case("boft", "llama", c_boft),
    Case("boft_constrained", "llama", c_boft_constrained),
    Case("oft_constrained", "llama", c_oft_constrained),
    Case("oft_loose", "llama", c_oft_loose),
    Case("oft_rescale", "llama", c_oft_rescale),
    Case("oft_conv", "sd1", c_oft_conv),
    Case("mixed_kinds", "llama", c_mixed),
    # half precision: an fp16 adapter on an fp32 base, and on an fp16 base (fp16 output)
    Case("lora_fp16_adapter", "llama", c_lora_linear, np.float16),
    Case("lora_fp16_base", "llama16", c_lora_linear, np.float16),
    Case("loha_fp16_base", "llama16", c_loha, np.float16),
    Case("oft_fp16_base", "llama16", c_oft_alpha0, np.float16),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_kind_formula(case: Case, bake, bases):
    base = bases.tensors(case.base)
    built = case.build(Gen(zlib.crc32(case.name.encode()), case.dtype), base)
    assert built.tensors and built.deltas
    baked = bake(case.base, {"a.safetensors": built.tensors}, LORA)
    expected = {k: f64(base[k]) + S * dw for k, dw in built.deltas.items()}
    assert_matches(baked, expected)
    warned = {d.code for d in baked.diagnostics if not d.is_error}
    assert built.warnings <= warned, baked.describe()
    assert "W0275" not in warned or "W0275" in built.warnings, baked.describe()


# ------------------------------------------------------------------------------------------------
# adapters combined in a recipe


def lora_file(g: Gen, specs, base) -> Built:
    """LoRA tensors for (module, rank, alpha) specs, shaped for the module's weight in `base`."""
    t, d = {}, {}
    for mod, r, alpha in specs:
        out, inn = w(base, mod).shape
        up, down = g(out, r), g(r, inn)
        t.update({mod + ".lora_up.weight": up, mod + ".lora_down.weight": down, mod + ".alpha": g.scalar(alpha)})
        d[mod + ".weight"] = lora_delta(up, down, alpha)
    return Built(t, d)


def test_two_loras_averaged(bake, bases):
    """0.5·A + 0.5·B: the union of their keys, a key only one updates gets half of that one."""
    base = bases.tensors("llama")
    g = Gen(11, np.float32)
    a = lora_file(g, [(Q, 2, 1.0), (K, 2, 2.0)], base)
    b = lora_file(g, [(Q, 3, 3.0), (V, 1, 1.0)], base)
    baked = bake("llama", {"a.safetensors": a.tensors, "b.safetensors": b.tensors},
                 'base + (0.5 * lora("a.safetensors", base=base) + 0.5 * lora("b.safetensors", base=base))')
    wq = Q + ".weight"
    expected = {wq: f64(base[wq]) + 0.5 * a.deltas[wq] + 0.5 * b.deltas[wq],
                K + ".weight": f64(base[K + ".weight"]) + 0.5 * a.deltas[K + ".weight"],
                V + ".weight": f64(base[V + ".weight"]) + 0.5 * b.deltas[V + ".weight"]}
    assert_matches(baked, expected)


def test_map_scales_a_lora_per_key(bake, bases):
    """A map times a LoRA: keys a `key("…")` rule sets to 0 are the base's, bit for bit."""
    base = bases.tensors("llama")
    g = Gen(12, np.float32)
    a = lora_file(g, [(Q, 2, 1.0), (K, 2, 2.0), (Q1, 2, 1.0), (K1, 3, 1.0)], base)
    baked = bake("llama", {"a.safetensors": a.tensors},
                 'base + {default: 1, key("model.layers.1.*"): 0, key("model.layers.0.self_attn.k_proj.*"): 0.25}'
                 ' * lora("a.safetensors", base=base)')
    expected = {Q + ".weight": f64(base[Q + ".weight"]) + a.deltas[Q + ".weight"],
                K + ".weight": f64(base[K + ".weight"]) + 0.25 * a.deltas[K + ".weight"]}
    assert_matches(baked, expected)  # layers.1's keys are not expected: they must equal the base


def test_fp64_precision(bake, bases):
    """`precision="fp64"` on an fp64 base: within 1e-12 of the float64 reference (and fp32 is not)."""
    base = bases.tensors("llama64")
    g = Gen(13, np.float64)
    lo = lora_file(g, [(Q, 4, 2.0)], base)
    t = dict(lo.tensors)
    t.update({K + ".lora_up.weight": g(8, 2), K + ".lora_down.weight": g(2, 16), K + ".alpha": g.scalar(1.0),
              K + ".dora_scale": g.pos(8, 1),
              V + ".hada_w1_a": g(8, 2), V + ".hada_w1_b": g(2, 16), V + ".hada_w2_a": g(8, 2),
              V + ".hada_w2_b": g(2, 16), V + ".alpha": g.scalar(1.0),
              O + ".oft_blocks": g(4, 4, 4, scale=0.3)})
    deltas = dict(lo.deltas)
    deltas[K + ".weight"] = dora_delta(w(base, K), lora_delta(t[K + ".lora_up.weight"], t[K + ".lora_down.weight"],
                                                              1.0), t[K + ".dora_scale"])
    deltas[V + ".weight"] = loha_delta(t[V + ".hada_w1_a"], t[V + ".hada_w1_b"], t[V + ".hada_w2_a"],
                                       t[V + ".hada_w2_b"], 1.0)
    deltas[O + ".weight"] = oft_delta(w(base, O), t[O + ".oft_blocks"])
    expected = {k: f64(base[k]) + S * dw for k, dw in deltas.items()}
    assert_matches(bake("llama64", {"a.safetensors": t}, LORA, precision="fp64"), expected, tol=1e-12)
    # the same run in fp32 arithmetic is visibly less exact: the option is what made the difference
    fp32 = bake("llama64", {"a.safetensors": t}, LORA, precision="fp32")
    assert fp32.ok, fp32.describe()
    err = max(float(np.max(np.abs(fp32.out[k] - v))) for k, v in expected.items())
    assert err > 1e-12


# ------------------------------------------------------------------------------------------------
# a property: any LoRA shape, rank, alpha and strength


@settings(max_examples=25, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(rank=st.integers(1, 6), out=st.integers(1, 12), inn=st.integers(1, 12),
       alpha=st.floats(0.05, 32.0), strength=st.floats(-2.0, 2.0), seed=st.integers(0, 2**32 - 1))
def test_lora_property(rank, out, inn, alpha, strength, seed):
    from safetensors.numpy import load_file, save_file

    from mechalang import pipeline

    rng = np.random.default_rng(seed)
    strength = round(strength, 3)
    base = {"blk.lin.weight": rng.standard_normal((out, inn)).astype(np.float32),
            "blk.other.weight": rng.standard_normal((3, 3)).astype(np.float32)}
    up = rng.standard_normal((out, rank)).astype(np.float32)
    down = rng.standard_normal((rank, inn)).astype(np.float32)
    alpha32 = np.array(alpha, dtype=np.float32)
    with tempfile.TemporaryDirectory() as folder:
        d = Path(folder)
        save_file(base, str(d / "base.safetensors"))
        write_adapter(d / "a.safetensors", {"blk.lin.lora_up.weight": up, "blk.lin.lora_down.weight": down,
                                            "blk.lin.alpha": alpha32})
        (d / "r.mecha").write_text('let base = model("base.safetensors")\n'
                                   f'export base + ({strength:.3f}) * lora("a.safetensors", base=base) '
                                   'to "out.safetensors"\n')
        result = pipeline.run(pipeline.load(d / "r.mecha"))
        assert result.ok, [(x.code, x.message) for x in result.diagnostics]
        got = load_file(str(d / "out.safetensors"))
    assert set(got) == set(base)
    np.testing.assert_array_equal(got["blk.other.weight"], base["blk.other.weight"])
    ref = f64(base["blk.lin.weight"]) + strength * lora_delta(up, down, float(alpha32))
    # fp32 rounding is relative to the terms summed (the base, and |s|·α/r·|U|·|D|), not to the
    # result, which may cancel to nearly 0 on a 1×1 weight
    terms = abs(strength) * float(alpha32) / rank * (np.abs(f64(up)) @ np.abs(f64(down)))
    bound = max(float(np.max(np.abs(base["blk.lin.weight"]))), float(np.max(terms)))
    close(got["blk.lin.weight"], ref, tol=1e-5, scale=bound, what=f"rank {rank} [{out}, {inn}] α {alpha}")
