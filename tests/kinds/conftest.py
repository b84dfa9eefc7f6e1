"""Fixtures for the adapter-kind tests: tiny synthetic base models (written under pytest's
temporary folders, never in the repository), a way to write an adapter file from numpy arrays,
and a way to bake it into a base through a real recipe run, reading every output tensor back."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

# name -> (architecture, dim_cap, dtype, seed)
BASES = {
    "llama": ("llama", 16, "float32", 1),
    "llama16": ("llama", 16, "float16", 2),
    "llama64": ("llama", 16, "float64", 3),
    "llama8": ("llama", 8, "float32", 4),  # every weight at most [8, 8]: for shape mismatches
    "sd1": ("sd1", 8, "float32", 5),
}


class Bases:
    """The synthetic base models, each written the first time a test asks for it."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._tensors: dict[str, dict[str, np.ndarray]] = {}

    def path(self, name: str) -> Path:
        from mechalang.synth import make_model

        path = self.folder / f"{name}.safetensors"
        if not path.exists():
            arch, cap, dtype, seed = BASES[name]
            make_model(arch, path, dim_cap=cap, dtype=dtype, seed=seed)
        return path

    def tensors(self, name: str) -> dict[str, np.ndarray]:
        from safetensors.numpy import load_file

        if name not in self._tensors:
            self._tensors[name] = load_file(str(self.path(name)))
        return self._tensors[name]


@pytest.fixture(scope="session")
def bases(tmp_path_factory) -> Bases:
    return Bases(tmp_path_factory.mktemp("kind_bases"))


def write_adapter(path: Path, tensors: dict[str, Any]) -> Path:
    """An adapter file from numpy arrays."""
    from safetensors.numpy import save_file

    save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(path))
    return path


@dataclass
class Baked:
    ok: bool
    diagnostics: list
    out: dict[str, np.ndarray] = field(default_factory=dict)
    base: dict[str, np.ndarray] = field(default_factory=dict)

    def codes(self) -> list[str]:
        return [d.code for d in self.diagnostics]

    def describe(self) -> str:
        return "\n".join(f"{d.code}: {d.message}" for d in self.diagnostics)


Bake = Callable[..., Baked]


@pytest.fixture
def bake(tmp_path, bases) -> Bake:
    """bake(base_name, {file name: tensors}, expr, precision=) -> Baked.

    The recipe is `let base = model("BASE")` then `export EXPR to "out.safetensors"`; adapter
    files are written next to the recipe (tmp_path), the base is found through models_dir."""
    from safetensors.numpy import load_file

    from mechalang import pipeline

    def run(base_name: str, adapters: dict[str, dict[str, Any]], expr: str, *, precision: str = "fp32") -> Baked:
        base_path = bases.path(base_name)
        for name, tensors in adapters.items():
            write_adapter(tmp_path / name, tensors)
        recipe = tmp_path / "bake.mecha"
        recipe.write_text(f'let base = model("{base_path.name}")\nexport {expr} to "out.safetensors"\n')
        program = pipeline.load(recipe, models_dir=base_path.parent)
        result = pipeline.run(program, precision=precision, overwrite=True)
        baked = Baked(result.ok, list(result.diagnostics))
        if result.ok:
            baked.out = load_file(str(tmp_path / "out.safetensors"))
            baked.base = bases.tensors(base_name)
        return baked

    return run


# ------------------------------------------------------------------------------------------------
# comparing outputs with a float64 reference


def assert_matches(baked: Baked, expected: dict[str, np.ndarray], *, tol: float = 1e-5) -> None:
    """EVERY output key: the keys with an expected value match it (float64 reference; within fp32
    rounding relative to the largest magnitude, or within one fp16 step of the reference rounded
    to fp16 for half outputs); every other key is the base's tensor, bit for bit."""
    assert baked.ok, baked.describe()
    assert set(baked.out) == set(baked.base), "the output has other keys than the base"
    missing = set(expected) - set(baked.base)
    assert not missing, f"test bug: expected keys not in the base: {missing}"
    for key, got in baked.out.items():
        base = baked.base[key]
        assert got.dtype == base.dtype, f"{key}: dtype {got.dtype}, the base's is {base.dtype}"
        assert got.shape == base.shape, f"{key}: shape {got.shape}, the base's is {base.shape}"
        if key not in expected:
            np.testing.assert_array_equal(got, base, err_msg=f"{key} is not touched and must equal the base")
            continue
        close(got, expected[key], tol=tol, what=key)


def close(got: np.ndarray, ref: np.ndarray, *, tol: float = 1e-5, what: str = "", scale: float | None = None) -> None:
    """`got` is `ref` up to rounding: for fp16, within one fp16 step of `ref` rounded to fp16 (and
    mostly exact); else within tol × `scale` (default: the largest |ref|)."""
    ref = np.asarray(ref, dtype=np.float64)
    assert got.shape == ref.shape, f"{what}: shape {got.shape}, expected {ref.shape}"
    assert np.all(np.isfinite(got)), f"{what}: non-finite values"
    if got.dtype == np.float16:
        ref16 = ref.astype(np.float16)
        step = np.spacing(np.abs(ref16)).astype(np.float64)
        err = np.abs(got.astype(np.float64) - ref16.astype(np.float64))
        assert np.all(err <= step), f"{what}: more than one fp16 step off: max {err.max()}"
        assert np.mean(err == 0) >= 0.95, f"{what}: only {np.mean(err == 0):.0%} exact in fp16"
        return
    if scale is None:
        scale = float(np.max(np.abs(ref)))
    scale = max(scale, 1e-30)
    err = float(np.max(np.abs(got.astype(np.float64) - ref)))
    assert err <= tol * scale, f"{what}: max error {err:.3g} > {tol:g} × {scale:.3g}"


# ------------------------------------------------------------------------------------------------
# the command line, as a subprocess


@dataclass
class Cli:
    rc: int
    stdout: str
    stderr: str

    @property
    def text(self) -> str:
        return self.stdout + self.stderr


def mecha(*args: str, cwd: Path) -> Cli:
    env = dict(os.environ, NO_COLOR="1", COLUMNS="200", TERM="dumb")
    p = subprocess.run([sys.executable, "-m", "mechalang", *args], cwd=cwd, env=env, capture_output=True,
                       text=True, timeout=120, check=False)
    return Cli(p.returncode, p.stdout, p.stderr)
