"""Diffusers pipeline folders (and a single component folder such as `unet/`) as model sources.

A pipeline folder holds `model_index.json` (`_class_name`: the pipeline class; one entry per
component: `[library, class]`, or nulls for a component it does not have) and a folder per
component with its `config.json` and weights: `diffusion_pytorch_model.safetensors` (diffusers
models) or `model.safetensors` (transformers models), possibly sharded (`*.safetensors.index.json`)
or as torch `.bin` files, and possibly only as a *variant* (`diffusion_pytorch_model.fp16.safetensors`).

The source has the architecture's single-file key names: archs/diffusers_map.py says where each
key lives (the mapping is data in stdlib/keymaps/), and each key becomes a stored tensor of its
folder's weights or a derived one (fused q/k/v concatenated, a linear seen as a 1x1 convolution,
a transposed projection, swapped halves). Tensors of a folder that no key of the architecture
uses are kept under `<folder>/<name>`, so nothing is dropped silently and a diffusers output
writes them back where they were.

Which weights file: the plain one (what `from_pretrained` loads by default); when a folder has
only variants, the `fp16` one, else the first variant by name. The choice is in the source's note
(`mecha info DIR`, `mecha check -v`). Nothing here imports torch.
"""

from __future__ import annotations

import json
import os
from dataclasses import replace

from ..archs import diffusers_map as dm
from . import hf, torchzip
from . import safetensors as st
from .model import Derived, Source, SourceError, SourceFile, Stored, Tensor

INDEX = "model_index.json"
CONFIG = "config.json"
#: Weight file stems: diffusers models, then transformers models.
STEMS = ("diffusion_pytorch_model", "model")
PREFERRED_VARIANT = "fp16"
#: Files a pipeline folder's weights are in, never copied as "other files" by an output.
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".ckpt", ".pt", ".pth", ".msgpack", ".h5", ".onnx", ".index.json")


def claims(path: str) -> bool:
    """A folder with model_index.json, or a component folder (diffusers weights beside a config)."""
    if not os.path.isdir(path):
        return False
    if os.path.isfile(os.path.join(path, INDEX)):
        return True
    try:
        names = os.listdir(path)
    except OSError:
        return False
    return CONFIG in names and any(n.startswith(STEMS[0] + ".") for n in names)


def open_folder(path: str) -> Source:
    path = os.path.abspath(path)
    if os.path.isfile(os.path.join(path, INDEX)):
        return _open_pipeline(path)
    return _open_component(path)


# ------------------------------------------------------------------------------------------------
# A whole pipeline


def _open_pipeline(path: str) -> Source:
    index_path = os.path.join(path, INDEX)
    index = hf.read_json(index_path)
    if not isinstance(index, dict):
        raise SourceError(index_path, "model_index.json is not a JSON object")
    cls = index.get("_class_name")
    listed = _listed(index)
    candidates = _candidates(index)
    if not candidates:
        known = ", ".join(sorted(dm.pipeline_classes()))
        raise SourceError(index_path, f"unknown pipeline class `{cls}` (components "
                                      f"{', '.join(sorted(listed)) or 'none'}): mechalang maps {known}, and "
                                      f"pipelines with exactly their components")
    arch = _accepting(path, candidates, listed, index_path, cls)
    lay = dm.layout(arch)
    present = {}
    for comp in lay.components:
        entry = listed.get(comp.folder)
        if entry is None:
            continue  # the pipeline has no such component (a null entry): the model lacks its keys
        folder = os.path.join(path, comp.folder)
        if not os.path.isdir(folder):
            raise SourceError(folder, f"model_index.json lists the component `{comp.folder}` "
                                      f"({entry[1]}), but its folder is missing")
        present[comp.folder] = folder
    if not present:
        raise SourceError(index_path, f"model_index.json lists none of the components of a {cls} "
                                      f"({', '.join(c.folder for c in lay.components)})")
    return _build(path, arch, present, f"diffusers {cls}")


def pipeline_arch(index: dict, folder: str | None = None) -> str | None:
    """The architecture of a model_index.json: by its pipeline class, else (a community pipeline
    class) by its components, when they are exactly one architecture's (by folder and class). A
    class several architectures share (StableDiffusionPipeline: SD1 and SD2) is the first whose
    component configs under `folder` it refuses none of; without `folder`, the first."""
    candidates = _candidates(index)
    if len(candidates) > 1 and folder is not None:
        return next((a for a in candidates if not _refusals(folder, a, _listed(index))), candidates[0])
    return candidates[0] if candidates else None


def _candidates(index: dict) -> tuple[str, ...]:
    cls = index.get("_class_name")
    archs = dm.pipeline_candidates().get(cls, ()) if isinstance(cls, str) else ()
    if not archs:
        archs = _archs_by_components(_listed(index))
    return archs


def _listed(index: dict) -> dict:
    """The components a model_index.json lists with a class (not null)."""
    return {k: v for k, v in index.items() if not k.startswith("_") and _is_component(v)}


def _accepting(path: str, candidates: tuple[str, ...], listed: dict, index_path: str, cls) -> str:
    """The first candidate architecture whose `refuse` rules no component config of the folder
    meets; none: a SourceError with each one's reason (a mixed or foreign pipeline)."""
    reasons = []
    for arch in candidates:
        found = _refusals(path, arch, listed)
        if not found:
            return arch
        reasons.append((arch, found[0]))
    if len(reasons) == 1:
        where, why = reasons[0][1]
        raise SourceError(where, f"config.json says {why}")
    said = "; ".join(f"not {arch}: {os.path.relpath(where, path)} says {why}" for arch, (where, why) in reasons)
    raise SourceError(index_path, f"a {cls} whose components are of different architectures ({said})")


def _refusals(path: str, arch: str, listed: dict) -> list[tuple[str, str]]:
    """(config.json path, what it says and why that is not `arch`) for each component config of the
    pipeline folder `path` that the layout of `arch` refuses."""
    out = []
    for comp in dm.layout(arch).components:
        if not comp.refuse or comp.folder not in listed:
            continue
        config_path = os.path.join(path, comp.folder, CONFIG)
        try:
            config = hf.read_json(config_path)
        except SourceError:
            continue  # reported when the folder is read
        why = _refused(config, comp)
        if why is not None:
            out.append((config_path, why))
    return out


def _refused(config, comp) -> str | None:
    if not isinstance(config, dict):
        return None
    for field, value, why in comp.refuse:
        if _field(config, field) == value:
            return f"{field} = {json.dumps(value)}: {why}"
    return None


def _is_component(v) -> bool:
    return isinstance(v, list) and len(v) == 2 and all(isinstance(x, str) for x in v)


def _archs_by_components(listed: dict) -> tuple[str, ...]:
    """An unknown pipeline class whose components are exactly those of some architectures (by
    folder and class): those architectures."""
    models = {k: v[1] for k, v in listed.items() if not k.startswith(("tokenizer", "scheduler")) and k not in EXTRAS}
    return tuple(arch for arch in dm.archs_with_layout()
                 if models == {c.folder: c.cls for c in dm.layout(arch).components})


#: Components a pipeline of any of these architectures may also list, which a merge leaves alone
#: (a diffusers output copies them from the config pipeline as they are).
EXTRAS = ("safety_checker", "feature_extractor", "image_encoder")


# ------------------------------------------------------------------------------------------------
# One component folder (`unet/`)


def _open_component(path: str) -> Source:
    config_path = os.path.join(path, CONFIG)
    config = hf.read_json(config_path)
    cls = config.get("_class_name") if isinstance(config, dict) else None
    folder_name = os.path.basename(path)
    candidates = [(arch, c) for arch in dm.archs_with_layout() for c in dm.layout(arch).components
                  if c.cls == cls]
    if not candidates:
        raise SourceError(config_path, f"a component of class `{cls}`, which no diffusers pipeline "
                                       f"mechalang maps has")
    # The architecture whose config rules accept the folder and whose map places the most of its
    # tensors (a UNet is SD1's, SD2's or SDXL's; SD1's and SD2's have the same names).
    tensors, files, note = _weights(path)
    best = None
    for arch, comp in candidates:
        inv = _inventory(arch)
        found, _ = dm.source_layout(arch, inv, {comp.folder: tensors})
        score = (_refused(config, comp) is None, sum(1 for k in found if k in inv), comp.folder == folder_name)
        if best is None or score > best[0]:
            best = (score, arch, comp)
    _, arch, comp = best
    return _build(path, arch, {comp.folder: path}, f"diffusers {cls}", single=True)


# ------------------------------------------------------------------------------------------------
# Building the source


def _build(path: str, arch: str, present: dict[str, str], what: str, single: bool = False) -> Source:
    lay = dm.layout(arch)
    comps = {c.folder: c for c in lay.components}
    files: list[SourceFile] = []
    stored: dict[str, dict[str, Tensor]] = {}
    notes = []
    for folder_name, folder in present.items():
        tensors, ffiles, note = _weights(folder)
        base = len(files)
        files += ffiles
        stored[folder_name] = {n: _refile(t, base) for n, t in tensors.items()}
        _check_config(folder, comps[folder_name], stored[folder_name])
        if note:
            notes.append(f"{folder_name}: {note}")
    inv = _inventory(arch)
    found, unused = dm.source_layout(arch, inv, {f: list(t) for f, t in stored.items()})
    out: dict[str, Tensor] = {}
    for key, p in found.items():
        out[key] = _derive(key, p, stored[p.folder], present[p.folder])
    for folder_name, names in unused.items():
        for n in names:
            out[f"{folder_name}/{n}"] = stored[folder_name][n]
    extra = () if single else other_files(path)
    note = what + ": " + ", ".join(present) + (f" ({'; '.join(notes)})" if notes else "")
    if unused:
        note += "; kept under their folder's name, with no place in the single-file layout: " + ", ".join(
            f"{len(v)} of {f}/" for f, v in unused.items())
    return Source(path, "diffusers", tuple(files), out, {}, extra, note, arch)


def _inventory(arch: str) -> dict[str, bool]:
    from ..archs.registry import get_arch

    a = get_arch(arch)
    return {k: s.optional for k, s in (a.inventory or {}).items()}


def _derive(key: str, p: dm.Placement, tensors: dict[str, Tensor], folder: str) -> Tensor:
    parts = [tensors[n] for n, _ in p.pieces]
    first = parts[0]
    if len(parts) > 1:
        rest = tuple(first.shape[1:])
        bad = next((n for (n, _), t in zip(p.pieces, parts) if tuple(t.shape[1:]) != rest or t.dtype != first.dtype),
                   None)
        if bad is not None:
            raise SourceError(folder, f"`{bad}` does not fit with `{p.pieces[0][0]}` to make `{key}` "
                                      f"(they are concatenated: same dtype and trailing dimensions)")
        shape = (sum(t.shape[0] for t in parts),) + rest
        return Derived(first.dtype, shape, "cat", tuple(parts), key)
    t = first
    if p.transform == "conv" and len(t.shape) == 2:
        return Derived(t.dtype, tuple(t.shape) + (1, 1), "reshape", (t,), key)
    if p.transform == "transpose" and len(t.shape) == 2:
        return Derived(t.dtype, (t.shape[1], t.shape[0]), "transpose", (t,), key)
    if p.transform == "swap":
        if not isinstance(t, Stored) or not t.shape or t.shape[0] % 2:
            raise SourceError(folder, f"`{p.pieces[0][0]}` cannot be split in two halves to make `{key}`")
        lo, hi = _rows(t, 0, t.shape[0] // 2), _rows(t, t.shape[0] // 2, t.shape[0])
        return Derived(t.dtype, tuple(t.shape), "cat", (hi, lo), key)
    return t


def _rows(t: Stored, a: int, b: int) -> Stored:
    """Rows a..b of a stored tensor: a contiguous byte range of it."""
    row = t.nbytes // t.shape[0]
    return replace(t, shape=(b - a,) + tuple(t.shape[1:]), begin=t.begin + a * row, end=t.begin + b * row)


def _refile(t: Tensor, base: int) -> Tensor:
    if isinstance(t, Stored):
        return replace(t, file=t.file + base)
    return replace(t, args=tuple(_refile(a, base) for a in t.args))


# ------------------------------------------------------------------------------------------------
# A component folder's weights and config


def weights_file(folder: str) -> tuple[str, str | None] | None:
    """(the weights file or index a component folder is read from, its variant or None)."""
    try:
        names = set(os.listdir(folder))
    except OSError:
        return None
    for variant in [None] + _variants(names):
        for ext in (".safetensors.index.json", ".safetensors", ".bin.index.json", ".bin"):
            for stem in STEMS:
                n = stem + (f".{variant}" if variant else "") + ext
                if n in names:
                    return n, variant
                # a sharded variant's index: diffusion_pytorch_model.safetensors.index.fp16.json
                if variant and ext.endswith(".index.json"):
                    n = f"{stem}{ext[:-len('.json')]}.{variant}.json"
                    if n in names:
                        return n, variant
    return None


def _variants(names: set[str]) -> list[str]:
    found = set()
    for n in names:
        for stem in STEMS:
            for ext in (".safetensors.index.json", ".safetensors", ".bin.index.json", ".bin"):
                if n.startswith(stem + ".") and n.endswith(ext):
                    mid = n[len(stem) + 1:-len(ext)]
                    if mid and "." not in mid and "-of-" not in mid:
                        found.add(mid)
            index = f"{stem}.safetensors.index."
            if n.startswith(index) and n.endswith(".json") and n.count(".") == 4:
                found.add(n[len(index):-len(".json")])
    return sorted(found, key=lambda v: (v != PREFERRED_VARIANT, v))


def _weights(folder: str) -> tuple[dict[str, Tensor], list[SourceFile], str]:
    chosen = weights_file(folder)
    if chosen is None:
        raise SourceError(folder, f"no weights: expected {STEMS[0]}.safetensors or {STEMS[1]}.safetensors "
                                  f"(or a sharded index, a .bin, or an fp16 variant of them)")
    name, variant = chosen
    target = os.path.join(folder, name)
    if name.endswith(".index.json"):
        files, tensors, _ = hf._sharded(target)
        note = f"{len(files)} shards"
    elif name.endswith(".safetensors"):
        f, tensors, _ = st.stored_tensors(target, 0)
        files, note = [f], ""
    else:
        one = torchzip.open_file(target)
        files, tensors, note = list(one.files), dict(one.tensors), ".bin"
    if variant:
        note = (note + ", " if note else "") + f"variant {variant}"
    return dict(tensors), list(files), note


def _check_config(folder: str, comp, tensors: dict[str, Tensor]) -> None:
    """config.json against the weights: what the layout's `config` rows say must agree."""
    path = os.path.join(folder, CONFIG)
    if not os.path.isfile(path):
        raise SourceError(folder, "no config.json: a diffusers component folder has one")
    config = hf.read_json(path)
    if not isinstance(config, dict):
        raise SourceError(path, "config.json is not a JSON object")
    archs = config.get("architectures")
    cls = config.get("_class_name") or (archs[0] if isinstance(archs, list) and archs else None)
    if isinstance(cls, str) and cls != comp.cls and not (comp.cls == "CLIPTextModel" and cls.startswith("CLIPTextModel")):
        raise SourceError(path, f"the `{comp.folder}` component is a {comp.cls} in this pipeline, "
                                f"but its config.json says {cls}")
    why = _refused(config, comp)
    if why is not None:
        raise SourceError(path, f"config.json says {why}")
    for field, name, dim in comp.config:
        want = _field(config, field)
        pre = comp.optional_prefix
        t = tensors.get(name) or tensors.get(pre + name) or (tensors.get(name[len(pre):]) if pre and name.startswith(pre) else None)
        if not isinstance(want, int) or isinstance(want, bool) or t is None or dim >= len(t.shape):
            continue
        if t.shape[dim] != want:
            raise SourceError(path, f"config.json says {field} = {want}, but the weights' `{name}` has "
                                    f"shape {list(t.shape)}")


def _field(config: dict, dotted: str):
    v = config
    for part in dotted.split("."):
        if isinstance(v, dict):
            v = v.get(part)
        elif isinstance(v, list) and part.isdigit() and int(part) < len(v):
            v = v[int(part)]
        else:
            return None
    return v


def read_model_index(folder: str) -> dict:
    """A pipeline folder's `model_index.json` as a dict; {} when it is missing or unreadable (the
    source itself reports why when it is opened)."""
    try:
        doc = hf.read_json(os.path.join(folder, "model_index.json"))
    except SourceError:
        return {}
    return doc if isinstance(doc, dict) else {}


def other_files(path: str) -> tuple[str, ...]:
    """Every file of the pipeline folder that is not weights (configs, tokenizers, scheduler,
    model_index.json, README...), relative to it: what a diffusers output copies."""
    out = []
    for root, dirs, names in os.walk(path):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for n in sorted(names):
            if n.startswith(".") or n.lower().endswith(WEIGHT_SUFFIXES):
                continue
            out.append(os.path.relpath(os.path.join(root, n), path))
    return tuple(out)
