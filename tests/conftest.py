"""Shared fixtures: small synthetic models with the real key names of each architecture."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

GOLDEN = Path(__file__).parent / "golden"

# name -> (architecture, seed); tiny shapes (every dimension capped at 4)
SMALL_MODELS = {
    "a": ("sd1", 1),
    "b": ("sd1", 2),
    "c": ("sd1", 3),
    "d": ("sd1", 4),
    "xl": ("sdxl", 5),
    "xl2": ("sdxl", 6),
}


def write_small_models(folder: Path) -> Path:
    from mechalang.synth import make_model

    folder.mkdir(parents=True, exist_ok=True)
    for name, (arch, seed) in SMALL_MODELS.items():
        path = folder / f"{name}.safetensors"
        if not path.exists():
            make_model(arch, path, dim_cap=4, dtype="float16", seed=seed)
    partial = folder / "partial.safetensors"
    if not partial.exists():
        # `b` without its VAE: for key-coverage reports.
        from safetensors.torch import load_file, save_file

        tensors = load_file(str(folder / "b.safetensors"))
        save_file({k: v for k, v in tensors.items() if not k.startswith("first_stage_model.")}, str(partial))
    write_broken_files(folder)
    return folder


def write_broken_files(folder: Path) -> None:
    """Files that are not valid safetensors, each broken in one way."""
    def raw(name: str, data: bytes) -> None:
        p = folder / name
        if not p.exists():
            p.write_bytes(data)

    raw("truncated.safetensors", struct.pack("<Q", 1 << 40) + b"{}")
    body = b'{"x": {"dtype": "F16", "shape": [2], "data_offsets": [0, 4]'
    raw("notjson.safetensors", struct.pack("<Q", len(body)) + body + b"\0" * 4)
    body = json.dumps({"x": {"dtype": "F16", "shape": [4], "data_offsets": [0, 8]}}).encode()
    raw("short.safetensors", struct.pack("<Q", len(body)) + body + b"\0" * 3)
    body = json.dumps({"x": {"dtype": "F7", "shape": [2], "data_offsets": [0, 4]}}).encode()
    raw("baddtype.safetensors", struct.pack("<Q", len(body)) + body + b"\0" * 4)
    raw("empty.safetensors", b"")


@pytest.fixture(scope="session")
def small_models(tmp_path_factory) -> Path:
    return write_small_models(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="session")
def golden_models() -> Path:
    return write_small_models(GOLDEN / "models")


@pytest.fixture(autouse=True)
def isolated_method_registry():
    """Methods registered by a test (plugins, entry points) do not leak into later tests."""
    from mechalang.methods import plugins
    from mechalang.methods.registry import REGISTRY

    REGISTRY.names()  # built-ins loaded before the snapshot
    methods = dict(REGISTRY._methods)
    loaded = dict(plugins._loaded_files)
    yield
    REGISTRY._methods.clear()
    REGISTRY._methods.update(methods)
    plugins._loaded_files.clear()
    plugins._loaded_files.update(loaded)
