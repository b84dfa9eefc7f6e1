"""Helpers for the tests of the linear, spherical and SD-merger method families."""

import numpy as np
import torch

# 1-D, 2-D, 3-D, 4-D (a conv kernel), a 1x1 conv, a 0-d scalar
SHAPES = [(11,), (6, 7), (3, 4, 5), (4, 3, 3, 3), (5, 4, 1, 1), ()]
EMPTY_SHAPES = [(0,), (3, 0), (0, 2, 3, 3)]


def rand(shape, seed, dtype=torch.float32, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=g, dtype=torch.float64) * scale).to(dtype)


def rands(n, shape, seed=0, dtype=torch.float32):
    return [rand(shape, seed * 1000 + i, dtype) for i in range(n)]


def npy(t):
    return t.detach().to(torch.float64).numpy()


def assert_matches(result, expected, *, like, atol=1e-5, rtol=1e-5):
    """`result` (a tensor) has `like`'s shape and dtype and equals the float64 array `expected`."""
    assert isinstance(result, torch.Tensor)
    assert result.shape == like.shape, (result.shape, like.shape)
    assert result.dtype == like.dtype, (result.dtype, like.dtype)
    if like.dtype in (torch.float16, torch.bfloat16):
        atol, rtol = max(atol, 2e-2), max(rtol, 2e-2)
    expected = np.asarray(expected, dtype=np.float64).reshape(like.shape)
    np.testing.assert_allclose(npy(result), expected, atol=atol, rtol=rtol)


def signature(name):
    from mechalang.methods import REGISTRY

    spec = REGISTRY.get(name)
    assert spec is not None, f"{name} is not registered"
    return spec
