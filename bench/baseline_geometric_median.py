"""A plain-torch geometric median of several safetensors files: the reference that
`bench_methods.py` times mecha's `geometric_median` against (mergekit has no such method).

    python bench/baseline_geometric_median.py OUT.safetensors IN1.safetensors IN2.safetensors ...

What a user without mechalang would write, as sd-mecha and mergekit structure their merges: for
each key, load the tensor from every input, stack them in float32 and run Weiszfeld's iterations
from the mean (weights 1 / max(‖xᵢ − m‖, eps), at most 100 iterations, stopping when the
objective Σᵢ ‖xᵢ − m‖ changes by at most 1e-10 of itself; distances in float64, as mecha's
defaults), then cast to the first input's dtype and save every key with safetensors' `save_file`
(no fsync, as mergekit). torch uses every core (its default).
"""

from __future__ import annotations

import sys

import torch
from safetensors import safe_open
from safetensors.torch import save_file

EPS, MAX_ITER, FTOL = 1e-6, 100, 1e-10


def geometric_median(tensors: list[torch.Tensor]) -> torch.Tensor:
    X = torch.stack([t.reshape(-1).float() for t in tensors])
    median = X.mean(0)
    d = torch.linalg.vector_norm(X - median, dim=1, dtype=torch.float64)
    objective = float(d.sum())
    for _ in range(MAX_ITER):
        w = 1.0 / d.clamp_min(EPS)
        median = (w / w.sum()).float() @ X
        d = torch.linalg.vector_norm(X - median, dim=1, dtype=torch.float64)
        new = float(d.sum())
        if abs(objective - new) <= FTOL * new:
            break
        objective = new
    return median.reshape(tensors[0].shape).to(tensors[0].dtype)


def main(out: str, inputs: list[str]) -> None:
    files = [safe_open(p, "pt") for p in inputs]
    result = {}
    for key in files[0].keys():
        tensors = [f.get_tensor(key) for f in files]
        if not tensors[0].is_floating_point():
            result[key] = tensors[0]
        elif all(torch.equal(tensors[0], t) for t in tensors[1:]):
            result[key] = tensors[0].clone()
        else:
            result[key] = geometric_median(tensors)
    save_file(result, out, metadata={"format": "pt"})


if __name__ == "__main__":
    if len(sys.argv) < 4:
        raise SystemExit(__doc__)
    main(sys.argv[1], sys.argv[2:])
