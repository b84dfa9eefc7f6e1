"""sd-mecha's names and what they are in mechalang: model configs, methods and their keywords,
components, and the words a converted recipe must not use as names."""

from __future__ import annotations

from dataclasses import dataclass, field

FORMAT_VERSION = "0.1.0"

# sd-mecha model configs → mechalang architecture names (identifiers usable as `arch=`).
ARCHES: dict[str, str] = {
    "sd1-ldm": "sd1",
    "sd1-ldm-base": "sd1",
    "sd1-kohya": "sd1_kohya",
    "sdxl-sgm": "sdxl",
    "sdxl-sgm-base": "sdxl",
    "sdxl-kohya": "sdxl_kohya",
    "sdxl-diffusers_unet_only": "sdxl_diffusers_unet",
    "sd3-comfyui": "sd3",
    "sd3-comfyui-base": "sd3",
    "flux-flux": "flux",
    "flux-flux-base": "flux",
    "flux_dev-flux": "flux",
    "flux_schnell-flux": "flux",
}

# sd-mecha's LoRA configs (`<base config>_<kohya|lycoris>_lora`) → the architecture of the model the
# LoRA applies to: such a `model` line is read with `lora(path, arch=...)`, a delta.
LORA_ARCHES: dict[str, str] = {
    "sd1-kohya_kohya_lora": "sd1",
    "sd1-kohya_lycoris_lora": "sd1",
    "sdxl-kohya_kohya_lora": "sdxl",
    "sdxl-kohya_lycoris_lora": "sdxl",
    "sdxl-kohya_but_diffusers_kohya_lora": "sdxl",
    "sdxl-kohya_but_diffusers_lycoris_lora": "sdxl",
}

# The config sd-mecha 1.x gives a scalar hyperparameter: `dict key=V`, wrapped in a `literal` with
# this config and converted by `convert_singleton`, is the value V.
SINGLETON_CONFIG = "singleton-mecha"

# sd-mecha method → (positional model parameters, variadic model parameter, positional
# hyperparameters in order). sd-mecha writes every positional parameter, hyperparameters included
# (`merge "weighted_sum" &0 &1 0.5`); mechalang wants those as keywords.
METHOD_SIGNATURES: dict[str, tuple[tuple[str, ...], str | None, tuple[str, ...]]] = {
    "weighted_sum": (("a", "b"), None, ("alpha",)),
    "slerp": (("a", "b"), None, ("alpha",)),
    "add_difference": (("a", "b"), None, ("alpha",)),
    "subtract": (("a", "b"), None, ()),
    "perpendicular_component": (("a", "b"), None, ()),
    "geometric_sum": (("a", "b"), None, ("alpha",)),
    "train_difference_mask": (("a", "b", "c"), None, ("alpha",)),
    "add_opposite_mask": (("a", "b", "c"), None, ("alpha",)),
    "add_strict_opposite_mask": (("a", "b", "c"), None, ("alpha",)),
    "multiply_quotient": (("a", "b", "c"), None, ("alpha",)),
    "rotate": (("a", "b"), None, ("alignment", "alpha", "centralization", "stiefel_eps",
                                  "stiefel_max_iters")),
    "truncate_rank": (("a",), None, ("rank", "use_approximate_basis", "approximate_basis_iters",
                                     "approximate_basis_seed")),
    "truncate_kronecker": (("a",), None, ("kronecker_ratio", "use_approximate_basis",
                                          "approximate_basis_iters", "approximate_basis_seed")),
    "scale": (("a",), None, ("alpha",)),
    "add_cosine_a": (("a", "b"), None, ("alpha",)),
    "add_cosine_b": (("a", "b"), None, ("alpha",)),
    "crossover": (("a", "b"), None, ("alpha", "tilt")),
    "tensor_sum": (("a", "b"), None, ("width", "offset")),
    "top_k_tensor_sum": (("a", "b"), None, ("width", "offset")),
    "randperm": (("a",), None, ("seed",)),
    "rebasin": (("a", "ref"), None, ("iters",)),
    "omit_non_finite": (("a",), None, ()),
    "exchange_ema": (("model",), None, ()),
    "fallback": (("a", "default"), None, ()),
    "pick_component": (("a",), None, ("component",)),
    "omit_component": (("a",), None, ("component",)),
    "cast": (("a",), None, ("device", "dtype")),
    "n_average": ((), "models", ()),
    "ties_sum": ((), "models", ()),
    "ties_sum_extended": ((), "models", ()),
    "ties_sum_with_dropout": ((), "deltas", ()),
    "model_stock": ((), "deltas", ()),
    "geometric_median": ((), "models", ()),
    "dropout": ((), "deltas", ()),
    "clamp": (("a",), "bounds", ()),
    "stack": ((), "values", ()),
}


@dataclass(frozen=True)
class MethodMap:
    """How an sd-mecha method is written in mechalang, where the two differ.

    `renames`: sd-mecha keyword → mechalang keyword. `values`: for a renamed keyword, sd-mecha
    value → mechalang value (booleans and numbers compare by value). `fill`: mechalang keywords
    added when sd-mecha's keyword is absent, because sd-mecha's default differs from mechalang's.
    `drop_if_default`: sd-mecha-only keywords left out when they hold sd-mecha's default (which
    is what mechalang does); with another value they are kept, for the checker to report.
    `exact_only`: sd-mecha keyword → (the value with which the mechalang method computes the same,
    why other values do not, sd-mecha's default): another value, given or by default, is refused
    (E0930) rather than run differently.
    """

    name: str
    renames: dict[str, str] = field(default_factory=dict)
    values: dict[str, dict[object, object]] = field(default_factory=dict)
    fill: dict[str, object] = field(default_factory=dict)
    drop_if_default: dict[str, object] = field(default_factory=dict)
    exact_only: dict[str, tuple[object, str, object]] = field(default_factory=dict)


METHODS: dict[str, MethodMap] = {
    # sd-mecha 1.x (format 0.1.0): k = share of entries kept; vote_sgn=true elects sgn Σ δ (classic
    # TIES: "sum"), false sgn Σ sgn δ ("count"); the disjoint mean is mechalang's normalize=true
    # (its default). sd-mecha keeps the entries at least as large as the ⌊(1 − k)·N⌋-th smallest
    # magnitude, one more than mechalang's ⌊k·N⌋ largest: the two agree only when k = 1. Where the
    # vote is tied, sd-mecha keeps nothing and mechalang elects +: with the sum vote that needs
    # deltas that cancel exactly, with the sign count any even split, so only the sum vote maps.
    "ties_sum": MethodMap("ties", renames={"k": "density", "vote_sgn": "consensus"},
                          values={"vote_sgn": {True: "sum", False: "count"}},
                          fill={"density": 1.0},
                          exact_only={
                              "k": (1.0, "sd-mecha keeps N − ⌊(1 − k)·N⌋ + 1 entries of each tensor, "
                                         "mechalang's `ties(density=k)` ⌊k·N⌋ (the paper's top-k); "
                                         "they agree only for k=1", 1.0),
                              "vote_sgn": (True, "with vote_sgn=false (the sign count) an evenly split "
                                                 "vote keeps nothing in sd-mecha and the positive "
                                                 "deltas in mechalang's `ties(consensus=\"count\")`",
                                           False)}),
    # sd-mecha's `alignment` and `alpha` are mechalang's `alpha` and `beta`.
    "rotate": MethodMap("rotate", renames={"alignment": "alpha", "alpha": "beta"},
                        drop_if_default={"centralization": 1.0, "stiefel_eps": 1e-8,
                                         "stiefel_max_iters": 100}),
    "geometric_median": MethodMap("geometric_median", renames={"maxiter": "max_iter"},
                                  fill={"ftol": 1e-20}),
    # sd-mecha 1.x's names for supermerger's cosine merges and copy/top-k regions
    "add_cosine_a": MethodMap("cosine_a"),
    "add_cosine_b": MethodMap("cosine_b"),
    "tensor_sum": MethodMap("tensor_sum", renames={"width": "alpha", "offset": "beta"}),
    "top_k_tensor_sum": MethodMap("top_k_tensor_sum", renames={"width": "alpha", "offset": "beta"}),
}

# sd-mecha methods with no exactly equivalent mechalang method: what to write instead. A recipe
# using one is refused (E0930) rather than run with a different formula. Names ending in `*` are
# prefixes (sd-mecha's per-config implementations, e.g. `rebasin_sdxl_sgm`).
UNSUPPORTED: dict[str, str] = {
    "train_difference_mask": "`train_difference(a, b, c, alpha=...)` is sd-mecha's "
                             "add_difference(a, subtract(b, c), alpha=train_difference_mask(a, b, c))",
    "add_opposite_mask": "mechalang's hyperparameters are per key, not per element; the nearest are "
                         "`train_difference(a, b, c)` and `similarity_add_difference(a, b, c)`",
    "add_strict_opposite_mask": "mechalang's hyperparameters are per key, not per element; the nearest "
                                "are `train_difference(a, b, c)` and `similarity_add_difference(a, b, c)`",
    "slerp": "mechalang's `slerp` is mergekit's: it interpolates the tensors themselves, where "
             "sd-mecha's interpolates their directions and rescales to (1 − α)·|a| + α·|b|; "
             "the nearest is `multislerp(a, b, weights=\"1 - α, α\")`",
    "multiply_quotient": "the nearest is `multiply_difference(a, b, c, alpha=...)`",
    "stack": "mechalang's hyperparameters are per key, not stacked tensors",
    "truncate_rank": "`truncate_rank(delta, rank=N)` truncates with an exact SVD; sd-mecha's default "
                     "approximate basis gives different values",
    "truncate_kronecker": "export the delta as a LoRA instead: `export d as lora(rank=N)`",
    "ties_sum_extended": "`ties(*deltas, density=k)`, then `model_stock(base, ...)` or "
                         "`geometric_median(...)` for the stock and median variants",
    "ties_sum_with_dropout": "`dare_ties(*deltas, density=1 - probability)` (or `della` with an "
                             "epsilon); their random draws differ from sd-mecha's",
    "dropout": "`dare_linear(*deltas, density=1 - probability)`; its random draws differ from sd-mecha's",
    "model_stock": "`model_stock(base, m1, m2, ...)` takes the models, not their deltas, and clamps "
                   "the angle's cosine at 0",
    "cast": "choose the output's dtype with `export ... as fp16` (or `as fp32`, `as bf16`)",
    "get_dtype": "choose the output's dtype with `export ... as fp16`",
    "get_device": "choose the device with `mecha run --device`",
    "get_rank_from_ratio": "`truncate_rank(delta, rank_ratio=...)`",
    "omit_non_finite": "mechalang has no step that drops non-finite values",
    "exchange_ema*": "mechalang has no EMA exchange; merge the EMA weights by their keys with a "
                     "hyperparameter map",
    "rebasin*": "mechalang has no re-basin permutation search",
    "randperm*": "mechalang has no random permutation of a model",
    "balance_attention*": "mechalang has no attention balancing",
    "extract_*": "export a delta as a LoRA with `export base - other as lora(rank=N)`",
}


# `pick_component` / `omit_component` are translated only under a `fallback` (see build.py); alone
# they would leave keys out of the model, which mechalang's values cannot.
COMPONENT_FILTERS: dict[str, str] = {
    "pick_component": "write `weighted_sum(other, model, alpha={default: 0, COMPONENT: 1})`: "
                      "the component from `model`, every other key from `other`",
    "omit_component": "write `weighted_sum(other, model, alpha={default: 1, COMPONENT: 0})`: "
                      "the component from `other`, every other key from `model`",
}


def unsupported_help(method: str) -> str | None:
    """What to write instead of sd-mecha's `method`, when mechalang has no exact equivalent."""
    if method in UNSUPPORTED:
        return UNSUPPORTED[method]
    for name, advice in UNSUPPORTED.items():
        if name.endswith("*") and method.startswith(name[:-1]):
            return advice
    return None

# sd-mecha component names → mechalang component names.
COMPONENTS = {
    "unet": "diffuser", "diffuser": "diffuser", "txt": "clip_l", "txt2": "clip_g",
    "clip_l": "clip_l", "clip_g": "clip_g", "t5xxl": "t5xxl", "vae": "vae",
}

# Text-encoder layer n of sd-mecha's `<config>_<component>_block_in<n>` keys, as key globs.
_TEXT_LAYERS = {
    ("sd1", "txt"): "cond_stage_model.transformer.text_model.encoder.layers.{n}.*",
    ("sd1", "clip_l"): "cond_stage_model.transformer.text_model.encoder.layers.{n}.*",
    ("sdxl", "txt"): "conditioner.embedders.0.transformer.text_model.encoder.layers.{n}.*",
    ("sdxl", "clip_l"): "conditioner.embedders.0.transformer.text_model.encoder.layers.{n}.*",
    ("sdxl", "txt2"): "conditioner.embedders.1.model.transformer.resblocks.{n}.*",
    ("sdxl", "clip_g"): "conditioner.embedders.1.model.transformer.resblocks.{n}.*",
}

LINE_KINDS = ("model", "merge", "dict", "literal")
# sd-mecha's pre-1.0 lines: `call` is the earliest name of `merge`, `lora "path"` a LoRA, and
# `parameter "name" "BASE"` a model to be given at merge time (a mechalang `param`).
LEGACY_LINE_KINDS = ("model", "merge", "call", "lora", "parameter", "dict")
# pre-1.0 architecture names (`model "a.safetensors" "sd1" "base"`)
LEGACY_ARCHES = {"sd1": "sd1", "sdxl": "sdxl", "sd3": "sd3", "flux": "flux"}
MODEL_SUFFIXES = (".safetensors", ".sft", ".ckpt", ".pt", ".pth", ".bin")

# Names a `let` must not take: mechalang keywords and the builtins a converted recipe uses.
RESERVED = {
    "import", "from", "as", "param", "let", "def", "export", "to", "for", "in", "with", "true",
    "false", "inf", "nan", "default", "model", "mbw", "key", "recipe", "out", "str", "int", "float", "bool",
    "list", "Model", "Delta", "Hyper", "Arch", "lora", "sd1", "sd2", "sdxl", "sd3", "flux", "llama", "generic",
    "fp16", "bf16", "fp32", "fp64", "fp8",
} | set(METHOD_SIGNATURES) | {m.name for m in METHODS.values()} | set(ARCHES.values())

