"""Provenance written into each output's safetensors metadata (DESIGN.md §2).

Always: the mechalang version, the recipe as canonical text with params resolved, the inputs'
names, files and architectures. With hashes known (`--hash`): their sha256, and the A1111-style
`sd_merge_models` / `sd_merge_recipe` fields that the webui and civitai read. Nothing
time-dependent is written, so the same recipe and inputs give byte-identical files.
"""

from __future__ import annotations

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


def build_metadata(program: Program, export: Export, output: str, *,
                   hashes: dict[str, str] | None = None) -> dict[str, str]:
    """The metadata of the output `output` (the export's path, or `-o`'s) that `export` writes."""
    loads = [n for n in export.node.walk() if n.load is not None]
    inputs = []
    for n in loads:
        entry = {"name": program.model_names.get(n.load.path, n.load.name),
                 "file": Path(n.load.path).name, "arch": n.arch.name}
        if hashes and n.load.path in hashes:
            entry["sha256"] = hashes[n.load.path]
        inputs.append(entry)
    meta = {
        "mechalang.version": __version__,
        "mechalang.recipe": program.recipe_text,
        "mechalang.inputs": json.dumps(inputs, separators=(",", ":")),
    }
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
