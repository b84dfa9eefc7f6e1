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
    "truncate_rank": (("a",), None, ("rank_ratio",)),
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
    """

    name: str
    renames: dict[str, str] = field(default_factory=dict)
    values: dict[str, dict[object, object]] = field(default_factory=dict)
    fill: dict[str, object] = field(default_factory=dict)
    drop_if_default: dict[str, object] = field(default_factory=dict)


METHODS: dict[str, MethodMap] = {
    # sd-mecha: k = share of entries kept (default 0.2, as mechalang's density); vote_sgn <= 0 elects
    # sgn Σ δ (classic TIES: "sum"), vote_sgn > 0 sgn Σ sgn δ ("TIES-SOUP": "count"); the disjoint
    # mean is mechalang's normalize=true (its default). Both defaults agree, so nothing is filled.
    "ties_sum": MethodMap("ties", renames={"k": "density", "vote_sgn": "consensus"},
                          values={"vote_sgn": {True: "count", False: "sum"}}),
    # sd-mecha's `alignment` and `alpha` are mechalang's `alpha` and `beta`.
    "rotate": MethodMap("rotate", renames={"alignment": "alpha", "alpha": "beta"},
                        drop_if_default={"centralization": 1.0, "stiefel_eps": 1e-8,
                                         "stiefel_max_iters": 100}),
    "geometric_median": MethodMap("geometric_median", renames={"maxiter": "max_iter"},
                                  fill={"ftol": 1e-20}),
}

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
MODEL_SUFFIXES = (".safetensors", ".sft", ".ckpt", ".pt", ".pth", ".bin")

# Names a `let` must not take: mechalang keywords and the builtins a converted recipe uses.
RESERVED = {
    "import", "from", "as", "param", "let", "def", "export", "to", "for", "in", "with", "true",
    "false", "inf", "nan", "default", "model", "mbw", "key", "recipe", "out", "str", "int", "float", "bool",
    "list", "Model", "Delta", "Hyper", "Arch", "sd1", "sdxl", "sd3", "flux", "llama", "generic",
    "fp16", "bf16", "fp32", "fp64", "fp8",
} | set(METHOD_SIGNATURES) | {m.name for m in METHODS.values()} | set(ARCHES.values())

