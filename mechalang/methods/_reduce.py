"""Reductions over whole tensors (norms, dot products) that stay accurate at any size.

A norm or a dot product over tens of millions of float32 values, accumulated in float32, loses up
to ~1e-3 of relative accuracy; the angle a spherical method takes from it is then off by several
bfloat16 units in the last place. Converting everything to float64 is accurate but slow (float64
dot products are not vectorised as well, and the conversion writes twice the bytes).

These helpers sum in two levels instead: blocks of `BLOCK` consecutive products are summed in the
working dtype by one batched matrix product (BLAS: fast, and over only `BLOCK` terms, so the error
of a block sum is at most ~`BLOCK` float32 units of the block's magnitude and in practice far less),
and the block sums, N / `BLOCK` of them, are added in float64. The result agrees with a float64
computation to ~1e-10 (float32 inputs) to ~1e-8 (bfloat16 inputs) of the norms' product, whatever
the tensor's size: five orders of magnitude below a bfloat16 step, at the speed of a float32 dot
product (25x faster than converting to float64), with no extra memory beyond the block sums.
"""

from ._lazy import torch

BLOCK = 32  # products summed in the working dtype before the float64 sum (as fast as 256, more accurate)


def _blocked_dot(a, b):
    """Σ aᵢ·bᵢ of two 1-d tensors of one dtype, as a 0-d float64 tensor."""
    n = a.numel()
    m = n // BLOCK
    total = torch.zeros((), dtype=torch.float64, device=a.device)
    if m:
        head = torch.bmm(a[:m * BLOCK].view(m, 1, BLOCK), b[:m * BLOCK].view(m, BLOCK, 1))
        total += head.view(-1).sum(dtype=torch.float64)
    if n > m * BLOCK:
        total += torch.dot(a[m * BLOCK:].to(torch.float64), b[m * BLOCK:].to(torch.float64))
    return total


def _same(a, b):
    """`a` and `b` flattened, contiguous, in one floating dtype (the wider of the two)."""
    a, b = a.reshape(-1), b.reshape(-1)
    if a.dtype != b.dtype:
        dt = torch.promote_types(a.dtype, b.dtype)
        a, b = a.to(dt), b.to(dt)
    if not a.is_floating_point():
        a, b = a.to(torch.float64), b.to(torch.float64)
    elif a.dtype in (torch.float16, torch.bfloat16):
        a, b = a.float(), b.float()
    return a.contiguous(), b.contiguous()


def dot64(a, b):
    """Σ aᵢ·bᵢ over all elements, as a 0-d float64 tensor."""
    return _blocked_dot(*_same(a, b))


def norm64(a):
    """‖a‖₂ over all elements, as a 0-d float64 tensor."""
    a, _ = _same(a, a)
    return torch.sqrt(_blocked_dot(a, a))


def rows_dot64(rows, v):
    """(rows @ v) for a 2-d `rows` and a vector `v`, each dot product accumulated as `dot64`."""
    return torch.stack([dot64(r, v) for r in rows]) if rows.shape[0] else \
        torch.zeros(0, dtype=torch.float64, device=rows.device)


def rows_norm64(rows):
    """The norm of each row of a 2-d tensor, accumulated as `norm64`."""
    return torch.stack([norm64(r) for r in rows]) if rows.shape[0] else \
        torch.zeros(0, dtype=torch.float64, device=rows.device)
