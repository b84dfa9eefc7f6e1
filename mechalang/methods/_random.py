"""Per-key random streams for random merge methods (DARE, DELLA, randomized SVD).

A random method must give byte-identical results for the same recipe, inputs and seed, whatever
the thread count, the device, and the order in which the engine visits keys. So no method touches
torch's global generator: each draw comes from a fresh CPU `torch.Generator` seeded from

    blake2b(seed, key name, stream)            (64 bits; Python's hash() is salted per process)

where `stream` tells apart several draws for one key (one per model, say). Numbers are drawn on the
CPU, where torch's generators are sequential and thread-count independent, and then moved to the
tensor's device, so a CUDA run draws the same masks as a CPU run.

Importing this module does not import torch (the checker imports method modules).
"""

import hashlib

from ._lazy import torch

_PERSON = b"mechalang.rng"  # blake2b personalisation: our seeds never collide with other uses


def derive_seed(seed: int, key: str, stream: int | str = 0) -> int:
    """A 64-bit seed from (seed, key name, stream), stable across processes and platforms."""
    text = f"{int(seed)}\x1f{key}\x1f{stream}".encode("utf-8")
    digest = hashlib.blake2b(text, digest_size=8, person=_PERSON).digest()
    return int.from_bytes(digest, "little")


def generator(seed: int, key: str, stream: int | str = 0):
    """A fresh CPU generator for one (seed, key, stream)."""
    g = torch.Generator(device="cpu")
    g.manual_seed(derive_seed(seed, key, stream))
    return g


def uniform(shape, seed: int, key: str, stream: int | str = 0, *, device=None, dtype=None):
    """U[0, 1) float32 numbers drawn on the CPU for (seed, key, stream), then moved to `device`
    (and cast to `dtype` when given)."""
    u = torch.rand(tuple(shape), generator=generator(seed, key, stream), dtype=torch.float32)
    if device is not None or dtype is not None:
        u = u.to(device=device, dtype=dtype)
    return u


def keep_mask(shape, p: float, seed: int = 0, key: str = "", stream: int | str = 0, *, device=None, dtype=None,
              gen=None):
    """A mask, true with probability `p` per element: `uniform(...) < p`.

    Boolean, or 0/1 in `dtype` when given (cheaper to multiply by). The comparison runs on the CPU,
    so only one byte per element travels to another device. `gen`: draw from this generator (the
    next numbers of a stream drawn in pieces) instead of a fresh one for (seed, key, stream)."""
    u = torch.rand(tuple(shape), generator=gen if gen is not None else generator(seed, key, stream),
                   dtype=torch.float32)
    on_cpu = device is None or torch.device(device).type == "cpu"
    if dtype is not None and on_cpu:
        return u.lt_(p).to(dtype)  # 0/1 floats in place
    mask = u < p
    del u
    if not on_cpu:
        mask = mask.to(device)
    return mask if dtype is None else mask.to(dtype)


def normal(shape, seed: int, key: str, stream: int | str = 0, *, device=None, dtype=None):
    """N(0, 1) float32 numbers drawn on the CPU for (seed, key, stream), then moved."""
    x = torch.randn(tuple(shape), generator=generator(seed, key, stream), dtype=torch.float32)
    if device is not None or dtype is not None:
        x = x.to(device=device, dtype=dtype)
    return x
