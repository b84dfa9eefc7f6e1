"""`mecha show FILE`: what a model file says about itself, read from its header only.

A summary of the tensors (architecture detected, key count, dtypes, size) and its provenance: the
recipe mechalang stored in it (with the version and inputs), the A1111 `sd_merge_*` fields, the
`modelspec.*` fields and any other metadata. A file made by another tool is shown too: it has no
recipe, and says so.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass

from ..diagnostics import codes, error
from ..units import format_bytes
from .output import fail, shown_path

RECIPE_KEY = "mechalang.recipe"


@dataclass(frozen=True)
class StoredRecipe:
    text: str
    version: str | None


def read_model_header(file: str):
    """What `file` (any model source: a file, a Hugging Face or diffusers folder, a .ckpt) holds,
    read from its headers, or the diagnostic saying why it cannot be read."""
    from ..paths import path_problem
    from ..sources import SourceError, open_source

    problem = path_problem(file)
    if problem:
        return None, error(codes.MODEL_UNREADABLE, f"the path {problem}", None)
    path = os.path.expanduser(file)
    if not os.path.exists(path):
        return None, error(codes.MODEL_NOT_FOUND, f"no such model file or folder `{file}`", None)
    try:
        return open_source(path), None
    except SourceError as exc:
        return None, error(codes.MODEL_UNREADABLE, f"`{file}`: {exc.message}", None)
    except OSError as exc:
        return None, error(codes.MODEL_UNREADABLE, f"`{file}`: {exc.strerror or exc}", None)


def stored_recipe(metadata: dict[str, str]) -> StoredRecipe | None:
    text = metadata.get(RECIPE_KEY)
    if not text:
        return None
    return StoredRecipe(text, metadata.get("mechalang.version"))


def show_command(file: str, *, format: str = "text") -> int:
    header, problem = read_model_header(file)
    if problem is not None:
        return fail([problem], None, format)
    from ..archs.detect import detect_keys

    det = detect_keys(list(header.tensors), {k: m.shape for k, m in header.tensors.items()})
    dtypes = Counter(t.dtype for t in header.tensors.values())
    meta = dict(header.metadata)
    recipe = stored_recipe(meta)
    if format == "json":
        print(json.dumps({
            "file": header.path, "arch": det.arch.name, "arch_confident": det.confident,
            "tensors": len(header.tensors), "dtypes": dict(dtypes), "bytes": header.size,
            "recipe": recipe.text if recipe else None, "metadata": meta,
        }, indent=2, ensure_ascii=False))
        return 0
    arch = det.arch.name + ("" if det.confident or det.arch.name == "generic" else " (a poor match)")
    print(f"{shown_path(header.path)}: {arch}, {len(header.tensors)} tensors, "
          + ", ".join(f"{n} {d}" for d, n in dtypes.most_common()) + f", {format_bytes(header.size)} in "
          + (f"{len(header.files)} files" if len(header.files) != 1 else "1 file"))
    if recipe is None:
        print("no mechalang recipe stored in this file (it was not made by mecha, or its metadata was removed)")
    else:
        made = f"made by mechalang {recipe.version}" if recipe.version else "made by mechalang"
        print(made + "; re-run it with `mecha run --from " + shown_path(header.path) + "`")
        _inputs(meta.pop("mechalang.inputs", None))
        _param_recipes(meta.pop("mechalang.param_recipes", None))
        print("recipe:")
        for line in recipe.text.rstrip("\n").splitlines():
            print("    " + line)
    meta.pop(RECIPE_KEY, None)
    meta.pop("mechalang.version", None)
    _a1111(meta)
    spec = {k: v for k, v in meta.items() if k.startswith("modelspec.")}
    if spec:
        print("modelspec:")
        for k, v in spec.items():
            print(f"    {k.removeprefix('modelspec.')}: {_one_line(v)}")
    rest = {k: v for k, v in meta.items() if not k.startswith("modelspec.")}
    if rest:
        print("other metadata:")
        for k, v in sorted(rest.items()):
            print(f"    {k}: {_one_line(v)}")
    return 0


def _one_line(v: str, limit: int = 200) -> str:
    v = " ".join(v.split())
    return v if len(v) <= limit else v[:limit] + f"… ({len(v)} characters)"


def _json(raw: str | None):
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return None


def _inputs(raw: str | None) -> None:
    inputs = _json(raw)
    if not isinstance(inputs, list):
        return
    print("inputs:")
    for i in inputs:
        if not isinstance(i, dict):
            continue
        sha = f"  sha256 {i['sha256']}" if i.get("sha256") else "  (no hash recorded: run with --hash)"
        print(f"    {i.get('name', '?')}: {i.get('file', '?')} ({i.get('arch', '?')}){sha}")


def _param_recipes(raw: str | None) -> None:
    found = _json(raw)
    if not isinstance(found, list):
        return
    print("recipes given as params (inlined below):")
    for p in found:
        if isinstance(p, dict):
            print(f"    {p.get('param', '?')} = {p.get('file', '?')}  sha256 {p.get('sha256')}")


def _a1111(meta: dict[str, str]) -> None:
    """The fields the AUTOMATIC1111 webui's checkpoint merger (and mecha --hash) write."""
    recipe = _json(meta.pop("sd_merge_recipe", None))
    models = _json(meta.pop("sd_merge_models", None))
    if recipe is None and models is None:
        return
    print("A1111 merge fields:")
    if isinstance(recipe, dict):
        for k, v in recipe.items():
            if v is not None:
                print(f"    {k}: {v}")
    if isinstance(models, dict):
        print("    models:")
        for sha, m in models.items():
            name = m.get("name", "?") if isinstance(m, dict) else "?"
            print(f"      {name}  sha256 {sha}")
