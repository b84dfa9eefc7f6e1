"""Provenance written into each output's safetensors metadata (DESIGN.md §2).

Always: the mechalang version, the recipe that ran as canonical text (check/provenance.py: params
resolved, paths relative, the output as written), the inputs' unique names, files and
architectures, and recipes given as params with their sha256. With hashes known (`--hash`): their sha256, and the A1111-style
`sd_merge_models` / `sd_merge_recipe` fields that the webui and civitai read. Nothing
time-dependent is written, so the same recipe and inputs give byte-identical files.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from .._version import __version__
from .program import Export, Program

MODELSPEC_ARCH = {
    "sd1": "stable-diffusion-v1",
    "sdxl": "stable-diffusion-xl-v1-base",
    "sd3": "stable-diffusion-v3-medium",
    "flux": "flux-1-dev",
}


def _sha256(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def build_metadata(program: Program, export: Export, output: str, *,
                   hashes: dict[str, str] | None = None) -> dict[str, str]:
    """The metadata of the output `output` (the export's path, or `-o`'s) that `export` writes."""
    loads = []
    for n in export.node.walk():  # each file once (one file read as two architectures is one input)
        if n.load is not None and all(n.load.path != m.load.path for m in loads):
            loads.append(n)
    inputs = []
    taken: set[str] = set()
    for n in loads:
        name = program.model_names.get(n.load.path, n.load.name)
        unique, i = name, 2
        while unique in taken:  # two files the recipe calls alike (in two modules, say)
            unique, i = f"{name}#{i}", i + 1
        taken.add(unique)
        entry = {"name": unique, "file": Path(n.load.path).name, "arch": n.arch.name}
        if hashes and n.load.path in hashes:
            entry["sha256"] = hashes[n.load.path]
        inputs.append(entry)
    meta = {
        "mechalang.version": __version__,
        "mechalang.recipe": program.stored_recipe(export, output),
        "mechalang.inputs": json.dumps(inputs, separators=(",", ":")),
    }
    if program.param_files:  # recipes given as params: inlined in the recipe, and named with their hash
        meta["mechalang.param_recipes"] = json.dumps(
            [{"param": k, "file": p.name, "sha256": _sha256(p)} for k, p in sorted(program.param_files.items())],
            separators=(",", ":"))
    arch = export.node.arch.name
    if arch in MODELSPEC_ARCH:
        meta["modelspec.sai_model_spec"] = "1.0.0"
        meta["modelspec.architecture"] = MODELSPEC_ARCH[arch]
        meta["modelspec.implementation"] = "https://github.com/Stability-AI/generative-models" if arch != "flux" else "https://github.com/black-forest-labs/flux"
        meta["modelspec.title"] = Path(output).stem
    if hashes:
        models = {}
        for n in loads:
            sha = hashes.get(n.load.path)
            if sha:
                models[sha] = {"name": Path(n.load.path).stem, "legacy_hash": None, "sha256": sha}
        meta["sd_merge_models"] = json.dumps(models)
        shas = [hashes.get(n.load.path) for n in loads]
        root = export.node
        alpha = None
        h = root.hyper("alpha")
        if h is not None and h.is_scalar:
            alpha = h.scalar
        meta["sd_merge_recipe"] = json.dumps({
            "type": "mechalang",
            "primary_model_hash": shas[0] if len(shas) > 0 else None,
            "secondary_model_hash": shas[1] if len(shas) > 1 else None,
            "tertiary_model_hash": shas[2] if len(shas) > 2 else None,
            "interp_method": root.op,
            "multiplier": alpha,
            "save_as_half": export.dtype == "fp16",
            "custom_name": Path(output).stem,
            "mechalang_version": __version__,
        })
    return meta
