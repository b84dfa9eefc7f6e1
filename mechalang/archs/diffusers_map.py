"""Where each key of an architecture's single-file checkpoint lives in a diffusers pipeline folder.

The facts are data: a keymap's `[diffusers]` table (stdlib/keymaps/<arch>.toml) lists the
pipeline classes of the architecture and, per component folder (`unet`, `vae`, `text_encoder`,
...), the checkpoint prefix it holds and the map that names its keys; the maps are the ones the
adapter dialects use (archs/keymap.py), applied here to every key and not only to weights:

- a key ending in `.weight` or `.bias` is its module's path plus that ending (OpenCLIP's
  `attn.in_proj_weight` / `attn.in_proj_bias` are module `attn.in_proj`), so one rule names a
  layer's weight and bias together;
- any other key (a bare parameter such as OpenCLIP's `positional_embedding`) is a path itself,
  named by a rule for that whole key.

A key is placed as one tensor of its folder, or as row slices of several (fused q/k/v), possibly
stored in another form (`as`: "conv", "transpose", "swap", see archs/keymap.py). Row slices are in
units of the fused *weight's* dim 1 (a bias uses its weight's), so scaled-down test models map
like full-size ones.

Reading a folder (`source_layout`) goes from the checkpoint's inventory: each inventory key of a
present component whose pieces the folder holds becomes a key of the model; keys of components
named as they are (CLIP-L in transformers names) are taken whole, listed or not, with the
component's `optional_prefix` put back where a writer left it out. Writing a folder
(`output_layout`) goes from the keys being written. Nothing here imports torch.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from functools import cache

from .keymap import DiffusersComponent, DiffusersLayout, _available, _keymap_name, _load, _translate

Rows = tuple[int, int]


@dataclass(frozen=True)
class Placement:
    """How one checkpoint key is stored in a diffusers folder."""

    key: str                                        # the checkpoint key
    folder: str                                     # its component folder
    pieces: tuple[tuple[str, tuple | None], ...]    # (tensor name in the folder, rows spec in units or None)
    transform: str | None                           # "conv" | "transpose" | "swap" | None

    @property
    def fused(self) -> bool:
        return len(self.pieces) > 1


def layout(arch: str) -> DiffusersLayout | None:
    """The diffusers layout of an architecture (name or alias), None when it has none."""
    return _load(_keymap_name(arch)).diffusers


@cache
def pipeline_candidates() -> dict[str, tuple[str, ...]]:
    """model_index.json `_class_name` -> the architectures whose pipelines have that class, by
    name (SD1 and SD2 are both StableDiffusionPipelines: their component configs tell them apart)."""
    out: dict[str, tuple[str, ...]] = {}
    for name in sorted(_available()):
        d = _load(name).diffusers
        for cls in d.pipelines if d else ():
            out[cls] = out.get(cls, ()) + (name,)
    return out


def pipeline_classes() -> dict[str, str]:
    """model_index.json `_class_name` -> the first architecture it may be."""
    return {cls: archs[0] for cls, archs in pipeline_candidates().items()}


def archs_with_layout() -> list[str]:
    return [n for n in sorted(_available()) if _load(n).diffusers is not None]


def split_key(key: str) -> tuple[str, str]:
    """(path, ending): `a.b.weight` -> (`a.b`, `.weight`); OpenCLIP's `attn.in_proj_bias` ->
    (`attn.in_proj`, `.bias`); a bare parameter is its own path with no ending."""
    for end in (".weight", ".bias"):
        if key.endswith(end):
            return key[:-len(end)], end
    for fused, end in (("_weight", ".weight"), ("_bias", ".bias")):
        if key.endswith(".in_proj" + fused):
            return key[:-len(fused)], end
    return key, ""


def place(arch: str, key: str, keys: Iterable[str] | Mapping) -> Placement | None:
    """Where checkpoint key `key` lives in a diffusers folder of `arch`; None when no component
    holds it or its map has no name for it. `keys` is the checkpoint's key set (for rules that
    depend on which layers exist)."""
    km = _load(_keymap_name(arch))
    if km.diffusers is None:
        return None
    present = keys if isinstance(keys, (set, frozenset, dict)) else set(keys)
    for comp in km.diffusers.components:
        if not key.startswith(comp.checkpoint):
            continue
        rel = key[len(comp.checkpoint):]
        if comp.paths is None:
            return Placement(key, comp.folder, ((rel, None),), None)
        path, end = split_key(rel)

        def has(p: str, c: str = comp.checkpoint) -> bool:
            return f"{c}{p}.weight" in present

        pieces = _translate(km, comp.paths, path, has, "")
        if not pieces:
            return None
        transforms = {t for _, _, t in pieces}
        if len(transforms) != 1 or (len(pieces) > 1 and any(r is None for _, r, _ in pieces)):
            return None
        if end == "" and any(r is not None for _, r, _ in pieces):
            return None  # row slices are of weights and biases only
        return Placement(key, comp.folder, tuple((p + end, r) for p, r, _ in pieces), transforms.pop())
    return None


def component_of(arch: str, key: str) -> DiffusersComponent | None:
    d = layout(arch)
    return next((c for c in d.components if key.startswith(c.checkpoint)), None) if d else None


def row_ranges(p: Placement, shapes: Mapping[str, tuple[int, ...]]) -> list[Rows] | None:
    """The concrete rows of dim 0 each piece of a fused key holds, from the weight's dim 1; None
    when they do not tile the key's dim 0 exactly."""
    shape = tuple(shapes[p.key])
    path, end = split_key(p.key)
    weight = p.key if end == ".weight" else _weight_key(p.key, path, shapes)
    if weight is None or len(shapes[weight]) < 2 or not shape:
        return None
    w, total = shapes[weight][1], shape[0]
    out = [(a * w, total if b is None else b * w) for _, (a, b) in p.pieces]
    pos = 0
    for start, stop in sorted(out):
        if start != pos or stop <= start:
            return None
        pos = stop
    return out if pos == total else None


def _weight_key(key: str, path: str, shapes: Mapping) -> str | None:
    for cand in (path + ".weight", key.replace("in_proj_bias", "in_proj_weight")):
        if cand in shapes and cand != key:
            return cand
    return None


@dataclass(frozen=True)
class OutputLayout:
    placements: dict[str, Placement]    # checkpoint key -> where it is written
    rows: dict[str, list[Rows]]         # fused key -> the rows of each piece
    left_out: list[str]                 # keys with no place in a diffusers folder


def output_layout(arch: str, shapes: Mapping[str, tuple[int, ...]]) -> OutputLayout:
    """Where each of the keys being written goes."""
    placements: dict[str, Placement] = {}
    rows: dict[str, list[Rows]] = {}
    left: list[str] = []
    keyset = set(shapes)
    for key in shapes:
        p = place(arch, key, keyset)
        if p is not None and p.fused:
            r = row_ranges(p, shapes)
            if r is None:
                p = None
            else:
                rows[key] = r
        if p is None:
            left.append(key)
        else:
            placements[key] = p
    return OutputLayout(placements, rows, left)


def source_layout(arch: str, inventory: Mapping[str, bool], folders: Mapping[str, Iterable[str]]
                  ) -> tuple[dict[str, Placement], dict[str, list[str]]]:
    """Reading a folder: (checkpoint key -> placement, for every key whose pieces the folders
    hold; folder -> its tensors no key uses), a stored name that lacks the component's optional
    prefix standing for the name with it. `inventory` maps the architecture's keys to whether
    they are optional; `folders` maps each present component folder to its tensor names."""
    d = layout(arch)
    found: dict[str, Placement] = {}
    used: dict[str, set[str]] = {f: set() for f in folders}
    names = {f: set(ks) for f, ks in folders.items()}
    for comp in d.components if d else ():
        if comp.folder not in names:
            continue
        have = names[comp.folder]
        if comp.paths is None:
            pre = comp.optional_prefix
            for n in sorted(have):
                k = comp.checkpoint + (n if n.startswith(pre) else pre + n)
                found[k] = Placement(k, comp.folder, ((n, None),), None)
                used[comp.folder].add(n)
            continue
        # a stored name as the map names it: itself, or with the optional prefix put back
        stored = {n: n for n in have}
        if comp.optional_prefix:
            for n in sorted(have):
                if not n.startswith(comp.optional_prefix):
                    stored.setdefault(comp.optional_prefix + n, n)
        keys = [k for k in inventory if k.startswith(comp.checkpoint)]
        for k in keys:
            p = place(arch, k, inventory)
            if p is None or not all(n in stored for n, _ in p.pieces):
                continue
            found[k] = replace(p, pieces=tuple((stored[n], r) for n, r in p.pieces))
            used[comp.folder].update(stored[n] for n, _ in p.pieces)
    unused = {f: sorted(names[f] - used[f]) for f in folders if names[f] - used[f]}
    return found, unused
