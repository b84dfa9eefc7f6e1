"""Scaled-fp8 checkpoints (ComfyUI's convention), seen as ordinary models.

Such a file stores each quantised linear weight `L.weight` as F8_E4M3 (or F8_E5M2) beside a scalar
(or per-row) `L.scale_weight`; the weight it stands for is `L.weight · L.scale_weight`. A
`scaled_fp8` tensor (empty, of the fp8 dtype) marks the file; `L.scale_input` holds activation
scales for fp8 matmuls. The source shown to recipes has `L.weight` as the product, in
DEQUANT_DTYPE, and none of the scale or marker keys, so it merges key by key with a bf16/fp16
model of the same architecture. Plain (unscaled) fp8 tensors need nothing: reads convert every
float dtype to the compute dtype.
"""

from __future__ import annotations

from dataclasses import replace

from .model import Derived, Source, Stored, Tensor

MARKER = "scaled_fp8"
SCALE = ".scale_weight"
INPUT_SCALE = ".scale_input"
FP8 = ("F8_E4M3", "F8_E5M2")
DEQUANT_DTYPE = "BF16"  # what scaled fp8 weights are dequantised to (`as fp32` keeps more)


def is_scaled(tensors: dict[str, Tensor]) -> bool:
    return MARKER in tensors or any(k.endswith(SCALE) for k in tensors)


def dequantised(src: Source) -> Source:
    """`src` with its scaled fp8 weights as products and its scale keys hidden (unchanged when it
    has none)."""
    t = src.tensors
    if not is_scaled(t):
        return src
    out: dict[str, Tensor] = {}
    scaled = 0
    for name, tensor in t.items():
        if name == MARKER or name.endswith(SCALE) or name.endswith(INPUT_SCALE):
            continue
        scale = t.get(name[: -len(".weight")] + SCALE) if name.endswith(".weight") else None
        if scale is not None and tensor.dtype in FP8 and _broadcasts(scale.shape, tensor.shape):
            out[name] = Derived(DEQUANT_DTYPE, tensor.shape, "mul", (tensor, scale), name)
            scaled += 1
        else:
            out[name] = tensor
    note = f"scaled fp8 ({scaled} weight{'s' if scaled != 1 else ''} dequantised to {DEQUANT_DTYPE})"
    return replace(src, tensors=out, note=(src.note + ", " if src.note else "") + note)


def _broadcasts(scale: tuple[int, ...], shape: tuple[int, ...]) -> bool:
    """A scalar, or one value per output row."""
    n = 1
    for d in scale:
        n *= d
    return n == 1 or (len(shape) >= 1 and n == shape[0] and len(scale) <= len(shape))


__all__ = ["dequantised", "is_scaled", "Stored"]
