"""Model kinds: what a file's tensors mean. A full model, or an adapter (LoRA and its dialects,
LyCORIS LoHa/LoKr/(IA)³/diff/DoRA, OFT) whose tensors group per target key of a base model and
turn into a delta by one documented formula each (kinds/builtin.py). `@model_kind` is the
extension API; archs/keymap.py maps adapter module names onto checkpoint keys.

Torch-free: the formulas import torch lazily, when the engine calls them."""

from .registry import KINDS, Inferred, KindContext, KindSpec, model_kind

__all__ = ["KINDS", "Inferred", "KindContext", "KindSpec", "model_kind"]
