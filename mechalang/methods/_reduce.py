"""Reductions over whole tensors, accumulated in float64.

A norm or a dot product over tens of millions of float32 values loses about 1e-3 of relative
accuracy; the angle a spherical method takes from it is then off by several bfloat16 units in the
last place. These helpers read the tensors in chunks, convert each chunk to float64 and sum there,
so the extra memory is one chunk, whatever the tensor's size, and the result is as accurate as a
float64 computation of the whole tensor.
"""

from ._lazy import torch

CHUNK = 1 << 20  # elements converted to float64 at a time


def dot64(a, b):
    """Σ aᵢ·bᵢ over all elements, as a 0-d float64 tensor."""
    a, b = a.reshape(-1), b.reshape(-1)
    total = torch.zeros((), dtype=torch.float64, device=a.device)
    for i in range(0, a.numel(), CHUNK):
        total += torch.dot(a[i:i + CHUNK].to(torch.float64), b[i:i + CHUNK].to(torch.float64))
    return total


def norm64(a):
    """‖a‖₂ over all elements, as a 0-d float64 tensor."""
    return torch.sqrt(dot64(a, a))


def rows_dot64(rows, v):
    """(rows @ v) for a 2-d `rows` and a vector `v`, each dot product accumulated in float64."""
    out = torch.zeros(rows.shape[0], dtype=torch.float64, device=rows.device)
    for i in range(0, rows.shape[1], CHUNK):
        out += rows[:, i:i + CHUNK].to(torch.float64) @ v[i:i + CHUNK].to(torch.float64)
    return out


def rows_norm64(rows):
    """The norm of each row of a 2-d tensor, accumulated in float64."""
    out = torch.zeros(rows.shape[0], dtype=torch.float64, device=rows.device)
    for i in range(0, rows.shape[1], CHUNK):
        part = rows[:, i:i + CHUNK].to(torch.float64)
        out += (part * part).sum(1)
    return torch.sqrt(out)
