"""The built-in model kinds: LoRA (with LoCon, Tucker, DoRA, rsLoRA), LoHa, LoKr, (IA)³, full
diffs, OFT. Each is registered through the same `@model_kind` API a plugin uses.

Every delta is the change to the target weight at strength 1; a recipe's `0.5 * lora(…)` scales it
linearly (half the delta, never a squared ratio). Tensors arrive in the compute dtype (fp32, or
fp64 with `--precision fp64`); `ctx.shape` is the target's shape (a row slice's, for fused keys).
"""

from __future__ import annotations

import math

from ..methods._lazy import torch
from .registry import Inferred, KindContext, model_kind


def _numel(shape) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def _fits(delta_numel: int, shape) -> bool:
    return delta_numel == _numel(shape)


def _scale(parts: dict, ctx: KindContext, rank: int) -> float:
    """α/r (α/√r for rsLoRA). α: the file's `alpha` tensor, else the adapter config's, else r
    (kohya's default: scale 1)."""
    if "alpha" in parts:
        alpha = float(parts["alpha"].reshape(-1)[0])
    else:
        alpha = ctx.params.get("alpha")
        if alpha is None:
            alpha = float(rank)
    if alpha == 0:  # kohya writes alpha 0 to mean "no scaling"
        alpha = float(rank)
    return alpha / (math.sqrt(rank) if ctx.params.get("rslora") else rank)


def _as_target(w, ctx: KindContext):
    if tuple(w.shape) == tuple(ctx.shape):
        return w
    return w.reshape(ctx.shape)


def _decompose(merged, base, magnitude, ctx: KindContext):
    """DoRA: the weight W + ΔW re-normalised to the learned magnitude, minus W. The magnitude's
    shape says the axis: [out] or [out, 1, …] normalises each output row (PEFT, LyCORIS
    wd_on_out); [1, in, …] each input column (LyCORIS' original layout)."""
    out = merged.shape[0]
    m = magnitude
    if m.dim() >= 2 and m.shape[0] == 1 and m.numel() == merged.shape[1] and out != 1:
        norm = merged.transpose(0, 1).reshape(merged.shape[1], -1).norm(dim=1)
        shape = (1, merged.shape[1]) + (1,) * (merged.dim() - 2)
    else:
        norm = merged.reshape(out, -1).norm(dim=1)
        shape = (out,) + (1,) * (merged.dim() - 1)
    scaled = merged * (m.reshape(-1) / norm).reshape(shape)
    return scaled - base


# ------------------------------------------------------------------------------------------------
# LoRA: kohya, LyCORIS LoCon (conv, Tucker), PEFT, diffusers; DoRA


def _lora_shape(parts: dict, params: dict) -> Inferred:
    up, down = parts["up"], parts["down"]
    if len(up) < 2 or len(down) < 2:
        return Inferred(problem=f"up {list(up)} and down {list(down)} must have at least 2 dimensions")
    rank = down[0]
    if up[1] != rank:
        return Inferred(problem=f"the rank does not match: up is {list(up)} (rank {up[1]}), down is "
                                f"{list(down)} (rank {rank})")
    if len(up) > 2 and any(d != 1 for d in up[2:]):
        return Inferred(problem=f"up {list(up)} must be a 1×1 convolution")
    if "mid" in parts:
        mid = parts["mid"]
        if len(mid) != 4 or mid[0] != up[1] or mid[1] != rank:
            return Inferred(problem=f"the Tucker core {list(mid)} does not fit up {list(up)} and down {list(down)}")
        shape = (up[0], down[1], mid[2], mid[3])
    else:
        shape = (up[0],) + tuple(down[1:])
    if params.get("fan_in_fan_out"):
        shape = (shape[1], shape[0]) + shape[2:]
    if "magnitude" in parts:
        m = _numel(parts["magnitude"])
        if m not in (shape[0], shape[1] if len(shape) > 1 else shape[0]):
            return Inferred(problem=f"the DoRA magnitude {list(parts['magnitude'])} fits neither the "
                                    f"{shape[0]} outputs nor the inputs of {list(shape)}")
    return Inferred(shape, rank)


@model_kind(
    "lora",
    parts={
        "lora_up.weight": "up", "lora_down.weight": "down", "lora_mid.weight": "mid",  # kohya, LyCORIS
        "lora_B.weight": "up", "lora_A.weight": "down",  # PEFT, diffusers
        "lora.up.weight": "up", "lora.down.weight": "down",  # diffusers' old attention processors
        "lora_linear_layer.up.weight": "up", "lora_linear_layer.down.weight": "down",
        "alpha": "alpha",
        "dora_scale": "magnitude", "lora_magnitude_vector": "magnitude",
        "lora_magnitude_vector.weight": "magnitude",
    },
    required=("up", "down"),
    formula="ΔW = (α/r)·U·D  (rsLoRA: α/√r; conv: U∘D composed; Tucker: U·M·D; DoRA: m·(W+ΔW)/‖W+ΔW‖ − W)",
    shape=_lora_shape,
    needs_base=("magnitude",),
)
def lora(parts: dict, ctx: KindContext):
    """Low-rank update: up U [out, r], down D [r, in] (a k×k convolution's D is [r, in, k, k] and U
    a 1×1 one, so their product is the composed convolution), optional Tucker core M [r, r, k, k]
    (LyCORIS LoCon), scale α/r with α from the file's `alpha` (missing: α = r, as kohya does) or
    the PEFT config (`lora_alpha`, `alpha_pattern`; `use_rslora` makes it α/√r). A `dora_scale`
    (kohya/LyCORIS) or `lora_magnitude_vector` (PEFT) makes it DoRA: the updated weight is
    re-normalised to that magnitude along the axis its shape names."""
    up, down = parts["up"], parts["down"]
    rank = down.shape[0]
    u = up.reshape(up.shape[0], -1)
    d = down.reshape(rank, -1)
    if "mid" in parts:
        w = torch.einsum("n m k l, i n, m j -> i j k l", parts["mid"], u, d)
    else:
        w = (u @ d).reshape((up.shape[0],) + tuple(down.shape[1:]))
    if ctx.params.get("fan_in_fan_out"):
        w = w.transpose(0, 1)
    w = _as_target(w * _scale(parts, ctx, rank), ctx)
    if "magnitude" in parts:
        return _decompose(ctx.base + w, ctx.base, parts["magnitude"], ctx)
    return w


def _embedding_shape(parts: dict, params: dict) -> Inferred:
    a, b = parts["A"], parts["B"]
    if len(a) != 2 or len(b) != 2 or a[0] != b[1]:
        return Inferred(problem=f"lora_embedding_A {list(a)} and lora_embedding_B {list(b)} do not share a rank")
    return Inferred((a[1], b[0]), a[0])


@model_kind(
    "lora_embedding",
    parts={"lora_embedding_A": "A", "lora_embedding_B": "B",
           "lora_embedding_A.weight": "A", "lora_embedding_B.weight": "B"},
    required=("A", "B"),
    formula="ΔW = (α/r)·(B·A)ᵀ",
    shape=_embedding_shape,
)
def lora_embedding(parts: dict, ctx: KindContext):
    """PEFT's LoRA on an embedding table: A [r, vocab], B [dim, r]; the table is [vocab, dim]."""
    a, b = parts["A"], parts["B"]
    return _as_target((b @ a).T * _scale(parts, ctx, a.shape[0]), ctx)


# ------------------------------------------------------------------------------------------------
# LyCORIS LoHa, LoKr


def _tucker(t, wa, wb):
    """A Tucker-factored k×k kernel as LyCORIS stores it: core t [r, r, k, k], wa [r, out], wb [r, in]."""
    return torch.einsum("i j k l, i p, j r -> p r k l", t, wa, wb).contiguous()


def _loha_factor_shape(a, b, t) -> tuple[int, ...] | None:
    if t is not None:
        if len(t) != 4 or len(a) != 2 or len(b) != 2:
            return None
        return (a[1], b[1], t[2], t[3])
    if len(a) != 2 or len(b) < 2 or a[1] != b[0]:
        return None
    return (a[0], _numel(b[1:]))


def _loha_shape(parts: dict, params: dict) -> Inferred:
    s1 = _loha_factor_shape(parts["w1a"], parts["w1b"], parts.get("t1"))
    s2 = _loha_factor_shape(parts["w2a"], parts["w2b"], parts.get("t2"))
    if s1 is None or s2 is None or _numel(s1) != _numel(s2):
        return Inferred(problem="the Hadamard factors hada_w1_a/b and hada_w2_a/b do not have matching shapes")
    return Inferred(s1, parts["w1b"][0])


@model_kind(
    "loha",
    parts={"hada_w1_a": "w1a", "hada_w1_b": "w1b", "hada_w2_a": "w2a", "hada_w2_b": "w2b",
           "hada_t1": "t1", "hada_t2": "t2", "alpha": "alpha", "dora_scale": "magnitude"},
    required=("w1a", "w1b", "w2a", "w2b"),
    formula="ΔW = (α/r)·(w1a·w1b) ⊙ (w2a·w2b)  (Tucker: each factor rebuilt from its core)",
    shape=_loha_shape,
    needs_base=("magnitude",),
)
def loha(parts: dict, ctx: KindContext):
    """LyCORIS LoHa: the Hadamard product of two low-rank matrices, scaled by α/r (r: the rows of
    hada_w1_b). With Tucker cores (hada_t1, hada_t2) each factor is rebuilt as a k×k kernel."""
    if "t1" in parts:
        w1 = _tucker(parts["t1"], parts["w1a"], parts["w1b"])
        w2 = _tucker(parts["t2"], parts["w2a"], parts["w2b"])
    else:
        w1 = parts["w1a"] @ parts["w1b"].reshape(parts["w1b"].shape[0], -1)
        w2 = parts["w2a"] @ parts["w2b"].reshape(parts["w2b"].shape[0], -1)
    w = _as_target(w1 * w2 * _scale(parts, ctx, parts["w1b"].shape[0]), ctx)
    if "magnitude" in parts:
        return _decompose(ctx.base + w, ctx.base, parts["magnitude"], ctx)
    return w


def _lokr_factor(parts: dict, n: str):
    if n in parts:
        return parts[n]
    if f"t{n[-1]}" in parts:
        return _tucker(parts[f"t{n[-1]}"], parts[n + "a"], parts[n + "b"])
    b = parts[n + "b"]
    return parts[n + "a"] @ b.reshape(b.shape[0], -1)


def _lokr_factor_shape(parts: dict, n: str) -> tuple[int, ...] | None:
    if n in parts:
        return parts[n]
    a, b = parts.get(n + "a"), parts.get(n + "b")
    if a is None or b is None:
        return None
    t = parts.get(f"t{n[-1]}")
    if t is not None:
        return (a[1], b[1], t[2], t[3]) if len(t) == 4 else None
    if len(a) != 2 or a[1] != b[0]:
        return None
    return (a[0], _numel(b[1:]))


def _lokr_rank(parts: dict) -> int | None:
    for n in ("w1b", "w2b"):
        if n in parts:
            return parts[n][0]
    return None


def _lokr_shape(parts: dict, params: dict) -> Inferred:
    s1, s2 = _lokr_factor_shape(parts, "w1"), _lokr_factor_shape(parts, "w2")
    if s1 is None or s2 is None or len(s1) != 2:
        return Inferred(problem="the Kronecker factors need lokr_w1 (or lokr_w1_a and lokr_w1_b) and "
                                "lokr_w2 (or lokr_w2_a and lokr_w2_b) with matching inner dimensions")
    out = s1[0] * s2[0]
    if len(s2) == 4:
        return Inferred((out, s1[1] * s2[1], s2[2], s2[3]), _lokr_rank(parts))
    return Inferred((out, s1[1] * _numel(s2[1:])), _lokr_rank(parts))


@model_kind(
    "lokr",
    parts={"lokr_w1": "w1", "lokr_w1_a": "w1a", "lokr_w1_b": "w1b", "lokr_w2": "w2", "lokr_w2_a": "w2a",
           "lokr_w2_b": "w2b", "lokr_t1": "t1", "lokr_t2": "t2", "alpha": "alpha", "dora_scale": "magnitude"},
    required=("w1|w1a", "w2|w2a"),
    formula="ΔW = s·kron(w1, w2), w = w or wa·wb; s = α/r when a factor is low-rank, else 1",
    shape=_lokr_shape,
    needs_base=("magnitude",),
)
def lokr(parts: dict, ctx: KindContext):
    """LyCORIS LoKr: the Kronecker product of two factors, each stored whole (lokr_w1) or as a
    low-rank pair (lokr_w1_a·lokr_w1_b; lokr_w2 also as a Tucker core lokr_t2). α/r scales it only
    when a factor is low-rank (r: that factor's rank), as LyCORIS does; a conv target's second
    factor is a k×k kernel."""
    w1, w2 = _lokr_factor(parts, "w1"), _lokr_factor(parts, "w2")
    rank = next((parts[n].shape[0] for n in ("w1b", "w2b") if n in parts), None)
    scale = _scale(parts, ctx, rank) if rank is not None else 1.0
    if w2.dim() == 4:
        w1 = w1.reshape(w1.shape[0], w1.shape[1], 1, 1)
    w = _as_target(torch.kron(w1, w2) * scale, ctx)
    if "magnitude" in parts:
        return _decompose(ctx.base + w, ctx.base, parts["magnitude"], ctx)
    return w


# ------------------------------------------------------------------------------------------------
# (IA)³, full diffs


def _ia3_shape(parts: dict, params: dict) -> Inferred:
    return Inferred(None, None) if len(parts["w"]) == 1 else Inferred(problem="an (IA)³ vector must be 1-D")


@model_kind(
    "ia3",
    parts={"weight": "w", "on_input": "on_input"},
    required=("w", "on_input"),
    formula="ΔW = W ⊙ l  (l along the outputs, or the inputs when on_input)",
    shape=_ia3_shape,
    needs_base=True,
)
def ia3(parts: dict, ctx: KindContext):
    """LyCORIS (IA)³: the layer's output (or input, when `on_input` is set) is scaled by 1 + l,
    so the weight changes by W ⊙ l along that axis."""
    w, base = parts["w"].reshape(-1), ctx.base
    if bool(parts["on_input"].reshape(-1)[0]):
        return base * w.reshape((1, -1) + (1,) * (base.dim() - 2))
    return base * w.reshape((-1,) + (1,) * (base.dim() - 1))


@model_kind("diff", parts={"diff": "diff"}, required=("diff",), formula="ΔW = diff")
def diff(parts: dict, ctx: KindContext):
    """LyCORIS full-weight difference: the delta itself."""
    return _as_target(parts["diff"], ctx)


@model_kind("diff_bias", parts={"diff_b": "diff"}, required=("diff",), formula="Δb = diff_b", target="bias")
def diff_bias(parts: dict, ctx: KindContext):
    """LyCORIS full bias difference."""
    return _as_target(parts["diff"], ctx)


# ------------------------------------------------------------------------------------------------
# OFT


def _oft_shape(parts: dict, params: dict) -> Inferred:
    b = parts["blocks"]
    if len(b) != 3 or b[1] != b[2]:
        return Inferred(problem=f"oft_blocks {list(b)} must be [blocks, size, size]")
    return Inferred(None, b[0], out=b[0] * b[1])


def _constraint(parts: dict, out: int) -> float:
    """The bound on ‖Q‖: the file's `alpha` times the output size, as LyCORIS and kohya read it
    (0: none)."""
    return float(parts["alpha"].reshape(-1)[0]) * out if "alpha" in parts else 0.0


def _cayley(blocks, constraint: float):
    """R = (I + Q)(I − Q)⁻¹ with Q = B − Bᵀ, Q scaled down to norm `constraint` when it is larger."""
    q = blocks - blocks.transpose(-1, -2)
    if constraint > 0:
        norm = torch.linalg.vector_norm(q) + 1e-8
        if norm > constraint:
            q = q * (constraint / norm)
    eye = torch.eye(q.shape[-1], dtype=q.dtype, device=q.device).expand_as(q)
    return (eye + q) @ torch.linalg.inv(eye - q)


@model_kind(
    "oft",
    parts={"oft_blocks": "blocks", "rescale": "rescale", "alpha": "alpha"},
    required=("blocks",),
    formula="W' = blockdiag(Rₖᵀ)·W (⊙ rescale), Rₖ = (I+Q)(I−Q)⁻¹, Q = Bₖ − Bₖᵀ, ‖Q‖ ≤ α·out;  ΔW = W' − W",
    shape=_oft_shape,
    needs_base=True,
)
def oft(parts: dict, ctx: KindContext):
    """Orthogonal fine-tuning (LyCORIS diag-OFT, kohya OFT): the output rows, in blocks, are
    rotated by the Cayley transform of each skew-symmetric block; ‖Q‖ (all blocks together) is
    scaled down to `alpha` × the output size when larger (alpha 0: no bound), as LyCORIS and kohya
    do; `rescale` is an optional per-output factor."""
    blocks, base = parts["blocks"], ctx.base
    n, size = blocks.shape[0], blocks.shape[1]
    r = _cayley(blocks, _constraint(parts, base.shape[0]))
    w = base.reshape(n, size, *base.shape[1:])
    rotated = torch.einsum("k n m, k n ... -> k m ...", r, w).reshape(base.shape)
    return _rescaled(rotated, parts) - base


def _rescaled(w, parts: dict):
    """OFT's optional per-output-row factor."""
    return w * parts["rescale"].reshape((-1,) + (1,) * (w.dim() - 1)) if "rescale" in parts else w


def _boft_shape(parts: dict, params: dict) -> Inferred:
    b = parts["blocks"]
    if len(b) != 4 or b[2] != b[3] or b[2] % 2:
        return Inferred(problem=f"butterfly oft_blocks {list(b)} must be [stages, blocks, size, size], size even")
    return Inferred(None, b[1], out=b[1] * b[2])


@model_kind(
    "boft",
    parts={"oft_blocks": "blocks", "rescale": "rescale", "alpha": "alpha"},
    required=("blocks",),
    formula="W' = Bₘ·…·B₁·W (⊙ rescale), Bᵢ = butterfly-permuted blockdiag(Rᵢₖ), Rᵢₖ = (I+Q)(I−Q)⁻¹;  ΔW = W' − W",
    shape=_boft_shape,
    needs_base=True,
)
def boft(parts: dict, ctx: KindContext):
    """Butterfly orthogonal fine-tuning (LyCORIS BOFT): m stages, each a block-diagonal rotation
    (the Cayley transform of each block, ‖Q‖ bound as OFT's) applied to the output rows in the
    butterfly order of that stage: rows grouped in pairs of runs of 2ⁱ·b/2, interleaved into
    blocks of b, rotated, and put back."""
    blocks, base = parts["blocks"], ctx.base
    stages, size = blocks.shape[0], blocks.shape[2]
    r = _cayley(blocks, _constraint(parts, base.shape[0]))
    w = base
    half = size // 2
    for i in range(stages):
        k = 2 ** i * half
        w = w.unflatten(0, (-1, 2, k)).transpose(1, 2).flatten(0, 2).unflatten(0, (-1, size))
        w = torch.einsum("b i j, b j ... -> b i ...", r[i], w)
        w = w.flatten(0, 1).unflatten(0, (-1, k, 2)).transpose(1, 2).flatten(0, 2)
    return _rescaled(w, parts) - base
