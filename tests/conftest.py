"""Shared fixtures: small synthetic models with the real key names of each architecture."""

from __future__ import annotations

import json
import os
import struct
import tempfile
from pathlib import Path

import pytest

# Caches (the models-folder catalog) go to a fresh folder: tests write only under tmp, and never
# see a cache left by another run.
os.environ["MECHA_CACHE_DIR"] = tempfile.mkdtemp(prefix="mecha-test-cache-")

GOLDEN = Path(__file__).parent / "golden"

# name -> (architecture, seed); tiny shapes (every dimension capped at 4)
SMALL_MODELS = {
    "a": ("sd1", 1),
    "b": ("sd1", 2),
    "c": ("sd1", 3),
    "d": ("sd1", 4),
    "xl": ("sdxl", 5),
    "xl2": ("sdxl", 6),
    "v2": ("sd2", 7),
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
    mixed = folder / "sd1_with_sd2_unet.safetensors"
    if not mixed.exists():
        # An SD1 checkpoint whose UNet is SD2's (same names, linear proj_in/proj_out): a mixed file.
        from safetensors.torch import load_file, save_file

        sd1, sd2 = load_file(str(folder / "a.safetensors")), load_file(str(folder / "v2.safetensors"))
        unet = "model.diffusion_model."
        save_file({**{k: v for k, v in sd1.items() if not k.startswith(unet)},
                   **{k: v for k, v in sd2.items() if k.startswith(unet)}}, str(mixed))
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


ROOT = Path(__file__).parent.parent
EXAMPLES = ROOT / "examples"


@pytest.fixture(scope="session")
def golden_workspace(tmp_path_factory) -> Path:
    """A copy of tests/golden (recipes and libraries) with the small models in `models/`: the
    golden cases run from here, so tests never write into the repository."""
    import shutil

    ws = tmp_path_factory.mktemp("golden")
    for sub in ("check", "syntax", "sdmecha"):
        shutil.copytree(GOLDEN / sub, ws / sub, ignore=shutil.ignore_patterns("*.out"))
    write_small_models(ws / "models")
    return ws


@pytest.fixture(scope="session")
def example_workspace(tmp_path_factory) -> Path:
    """A copy of examples/ with its generated models in examples/models (the folder the recipes
    name), so example runs and fuzzing never write into the repository."""
    import shutil
    import subprocess
    import sys

    dest = tmp_path_factory.mktemp("examples") / "examples"
    shutil.copytree(EXAMPLES, dest, ignore=shutil.ignore_patterns("models", "out", "*.safetensors", "__pycache__"))
    subprocess.run([sys.executable, str(dest / "make_models.py"), "--out", str(dest / "models")],
                   check=True, capture_output=True)
    return dest


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


# ------------------------------------------------------------------------------------------------
# Tests write only under their temporary folders: the repository's examples/ and tests/golden/ are
# compared before and after the session (goldens are rewritten on purpose with MECHA_UPDATE_GOLDEN=1).

_WATCHED = (EXAMPLES, GOLDEN)


def _snapshot() -> dict[str, tuple[int, int]]:
    out = {}
    for root in _WATCHED:
        for p in root.rglob("*"):
            if "__pycache__" in p.parts or not p.is_file():
                continue
            st = p.stat()
            out[str(p)] = (st.st_size, st.st_mtime_ns)
    return out


def pytest_sessionstart(session):
    session.config._repo_snapshot = _snapshot()


def pytest_sessionfinish(session, exitstatus):
    import os

    before = getattr(session.config, "_repo_snapshot", None)
    if before is None or os.environ.get("MECHA_UPDATE_GOLDEN") == "1":
        return
    after = _snapshot()
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    if changed:
        session.config.get_terminal_writer().line(
            "tests wrote into the repository (they must write only under tmp_path):\n  " + "\n  ".join(changed),
            red=True)
        session.exitstatus = 1
