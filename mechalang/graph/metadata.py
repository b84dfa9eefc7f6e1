"""Provenance written into each output's safetensors metadata (DESIGN.md §2).

Always: the mechalang version, the recipe as canonical text with params resolved, the inputs'
names, files and architectures. With hashes known (`--hash`): their sha256, and the A1111-style
`sd_merge_models` / `sd_merge_recipe` fields that the webui and civitai read. Nothing
time-dependent is written, so the same recipe and inputs give byte-identical files.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from .. import __version__
from ..syntax import ast

MODELSPEC_ARCH = {
    "sd1": "stable-diffusion-v1",
    "sdxl": "stable-diffusion-xl-v1-base",
    "sd3": "stable-diffusion-v3-medium",
    "flux": "flux-1-dev",
}


def literal(value: Any) -> ast.Node | None:
    """An AST literal for a param value (None when it has no literal form)."""
    from ..check.values import ArchValue, ModelValue

    if isinstance(value, bool):
        return ast.Bool(value)
    if isinstance(value, (int, float)):
        text = repr(value)
        if text.startswith("-"):
            return ast.UnaryOp("-", ast.Number(text[1:]))
        return ast.Number(text)
    if isinstance(value, str):
        return ast.String(value)
    if isinstance(value, ArchValue):
        return ast.Name(value.arch.name)
    if isinstance(value, ModelValue) and value.node.op == "load":
        return ast.Call(ast.Name("model"), (ast.String(value.node.load.path),))
    return None


def resolved_recipe_text(program) -> str:
    """The main recipe, canonically printed, with each param's default set to the value used."""
    from ..syntax.printer import print_module

    tree = program.main.tree
    stmts = []
    for s in tree.statements:
        if isinstance(s, ast.Param) and program.params.get(s.name) is not None:
            lit = literal(program.params[s.name])
            if lit is not None:
                s = replace(s, default=lit)
        stmts.append(s)
    return print_module(ast.Module(tuple(stmts)))


def build_metadata(program, lowered_inputs, export, *, hashes: dict[str, str] | None = None,
                   recipe_text: str | None = None) -> dict[str, str]:
    from ..check.evaluate import ExportResult

    assert isinstance(export, ExportResult)
    loads = [n for n in export.node.walk() if n.op == "load"]
    inputs = []
    for n in loads:
        entry = {"name": program.model_names.get(n.load.path, n.load.name),
                 "file": Path(n.load.path).name, "arch": n.arch.name}
        if hashes and n.load.path in hashes:
            entry["sha256"] = hashes[n.load.path]
        inputs.append(entry)
    meta = {
        "mechalang.version": __version__,
        "mechalang.recipe": recipe_text if recipe_text is not None else resolved_recipe_text(program),
        "mechalang.inputs": json.dumps(inputs, separators=(",", ":")),
    }
    arch = export.node.arch.name
    if arch in MODELSPEC_ARCH:
        meta["modelspec.sai_model_spec"] = "1.0.0"
        meta["modelspec.architecture"] = MODELSPEC_ARCH[arch]
        meta["modelspec.implementation"] = "https://github.com/Stability-AI/generative-models" if arch != "flux" else "https://github.com/black-forest-labs/flux"
        meta["modelspec.title"] = Path(export.path).stem if export.path else "merged"
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
            "custom_name": Path(export.path).stem if export.path else None,
            "mechalang_version": __version__,
        })
    return meta
