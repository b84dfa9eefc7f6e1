"""Reading an adapter file's header into an `AdapterMap`: which of its tensors update which key of
the base, by which kind's formula, with which rank and scale parameters. Headers only: this is what
`mecha check` reports, and what lowering turns into per-key operations.

Steps: split every tensor name into module + suffix (kinds/registry.py); group a module's tensors
into one group per kind whose required parts are there; map the module name onto the base's keys
(archs/keymap.py: kohya, PEFT, diffusers, ComfyUI and native spellings, fused q/k/v rows included);
check each group's shapes against its target. What maps to nothing is `unused`, and reported.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from typing import Any, Mapping

from .registry import KINDS, Inferred, KindSpec

PEFT_PREFIX = "base_model.model."
NO_ALPHA_NOTE = "no `alpha` tensors: the scale is 1 (α = rank), as kohya's scripts assume"


@dataclass(frozen=True)
class Piece:
    """One group of adapter tensors and the (part of the) target key it updates."""

    module: str
    kind: str
    parts: tuple[tuple[str, str], ...]  # (part name, tensor name in the file)
    rows: tuple[int, int] | None  # the slice of the target's dim 0, for fused keys
    shape: tuple[int, ...]  # the delta's shape (the slice's, when rows are set)
    rank: int | None = None
    params: tuple[tuple[str, Any], ...] = ()  # alpha (from a config), rslora, fan_in_fan_out
    needs_base: bool = False


@dataclass(frozen=True)
class AdapterMap:
    dialect: str  # "kohya" | "peft" | "diffusers" | "comfy" | "native"
    targets: tuple[tuple[str, tuple[Piece, ...]], ...]  # target key -> its pieces, in base key order
    shapes: tuple[tuple[str, tuple[int, ...]], ...]  # target key -> its full shape
    unused: tuple[str, ...] = ()  # tensor names that map to no key of the base
    problems: tuple[tuple[str, str], ...] = ()  # (module or tensor, what is wrong)
    notes: tuple[str, ...] = ()
    config: str | None = field(default=None, compare=False)  # the PEFT adapter_config.json read
    # (module, kind) of every group whose delta needs the base weight, mapped or not
    base_kinds: tuple[tuple[str, str], ...] = ()

    @property
    def kinds(self) -> list[str]:
        return sorted({p.kind for _, ps in self.targets for p in ps})

    @property
    def ranks(self) -> list[int]:
        return sorted({p.rank for _, ps in self.targets for p in ps if p.rank is not None})

    @property
    def needs_base(self) -> bool:
        return any(p.needs_base for _, ps in self.targets for p in ps)

    def pieces(self, key: str) -> tuple[Piece, ...]:
        return dict(self.targets).get(key, ())


def is_adapter(tensors: Mapping[str, Any]) -> bool:
    """Whether a file's tensors are mostly an adapter's (in groups some kind completes), not a
    model's: what `mecha merge` uses to tell a LoRA given where a model is expected."""
    if not tensors:
        return False
    modules, unknown = _groups(tensors)
    if len(unknown) > len(tensors) / 2:  # a model's names: no kind's suffixes (the usual answer, fast)
        return False
    grouped = 0
    for suffixes in modules.values():
        groups, _ = _kind_groups(suffixes, tensors)
        grouped += len({t for _, parts in groups for t in parts.values()})
    return grouped >= len(tensors) / 2


def dialect_of(names) -> str:
    """The dialect a set of adapter module names is written in."""
    counts = {"kohya": 0, "peft": 0, "diffusers": 0, "comfy": 0, "native": 0}
    for n in names:
        if n.startswith(("lora_unet_", "lora_te_", "lora_te1_", "lora_te2_", "lora_te3_", "lycoris_")):
            counts["kohya"] += 1
        elif n.startswith(PEFT_PREFIX):
            counts["peft"] += 1
        elif n.startswith(("unet.", "transformer.", "text_encoder.", "text_encoder_2.", "text_encoder_3.")):
            counts["diffusers"] += 1
        elif n.startswith("diffusion_model."):
            counts["comfy"] += 1
        else:
            counts["native"] += 1
    return max(counts, key=lambda k: counts[k])


# ------------------------------------------------------------------------------------------------
# PEFT's adapter_config.json


@dataclass(frozen=True)
class PeftConfig:
    path: str
    r: int | None
    alpha: float | None
    rank_pattern: dict
    alpha_pattern: dict
    rslora: bool
    dora: bool
    fan_in_fan_out: bool

    def _match(self, patterns: dict, module: str):
        # PEFT's rule: a pattern matches a module path ending in it, on a dot boundary
        for pattern, value in patterns.items():
            if re.match(rf"(.*\.)?({pattern})$", module):
                return value
        return None

    def params(self, module: str) -> dict[str, Any]:
        path = module[len(PEFT_PREFIX):] if module.startswith(PEFT_PREFIX) else module
        r = self._match(self.rank_pattern, path) or self.r
        alpha = self._match(self.alpha_pattern, path)
        if alpha is None:
            alpha = self.alpha
        out: dict[str, Any] = {}
        if alpha is not None:
            out["alpha"] = float(alpha)
        if r is not None:
            out["config_rank"] = int(r)
        if self.rslora:
            out["rslora"] = True
        if self.fan_in_fan_out:
            out["fan_in_fan_out"] = True
        return out


def read_peft_config(adapter_path: str) -> tuple[PeftConfig | None, str | None]:
    """The `adapter_config.json` beside an adapter file: (config, None), (None, None) when there is
    none, or (None, problem)."""
    path = os.path.join(os.path.dirname(os.path.abspath(adapter_path)), "adapter_config.json")
    if not os.path.isfile(path):
        return None, None
    try:
        with open(path, encoding="utf-8") as f:
            raw = json.load(f)
    except (OSError, ValueError) as exc:
        return None, f"cannot read {path}: {exc}"
    if not isinstance(raw, dict):
        return None, f"{path} is not a JSON object"

    def number(name, kind):
        v = raw.get(name)
        return v if isinstance(v, kind) and not isinstance(v, bool) else None

    patterns = {}
    for name in ("rank_pattern", "alpha_pattern"):
        v = raw.get(name) or {}
        patterns[name] = v if isinstance(v, dict) else {}
    return PeftConfig(path, number("r", int), number("lora_alpha", (int, float)), patterns["rank_pattern"],
                      patterns["alpha_pattern"], bool(raw.get("use_rslora")), bool(raw.get("use_dora")),
                      bool(raw.get("fan_in_fan_out"))), None


# ------------------------------------------------------------------------------------------------
# Building the map


def _groups(tensors: Mapping[str, Any]) -> tuple[dict[str, dict[str, str]], list[str]]:
    """module -> {suffix: tensor name}; and the tensor names no kind knows."""
    modules: dict[str, dict[str, str]] = {}
    unknown = []
    for name in tensors:
        split = KINDS.split(name)
        if split is None:
            unknown.append(name)
            continue
        module, suffix = split
        modules.setdefault(module, {})[suffix] = name
    return modules, unknown


def _kind_groups(suffixes: dict[str, str], tensors: Mapping[str, Any] | None = None
                 ) -> tuple[list[tuple[KindSpec, dict[str, str]]], list[str]]:
    """The groups one module's tensors form: (kind, {part: tensor name}) for every kind whose
    required parts are present (a kind whose parts are a subset of another's found kind is not
    counted twice); and the tensors no group uses."""
    found = []
    for spec in KINDS.all():
        parts = {spec.parts[s]: t for s, t in suffixes.items() if s in spec.parts}
        if parts and spec.complete(parts):
            found.append((spec, parts))
    if tensors is not None and len(found) > 1:
        # Kinds that read the same tensor names (OFT's `oft_blocks`: 3-D for diagonal OFT, 4-D for
        # butterfly OFT) are told apart by the shapes: those whose shape check passes win.
        def fits(spec, parts) -> bool:
            if spec.shape is None:
                return True
            return spec.shape({p: tuple(tensors[t].shape) for p, t in parts.items()}, {}).problem is None

        claimed: dict[frozenset, list] = {}
        for spec, parts in found:
            claimed.setdefault(frozenset(parts.values()), []).append((spec, parts))
        found = []
        for rivals in claimed.values():
            good = [g for g in rivals if fits(*g)] if len(rivals) > 1 else rivals
            found.extend(good or rivals)
    # `alpha` alone completes nothing; a module with lora_up/down is LoRA, not also some kind that
    # only needs shared parts. Keep the groups that own at least one tensor no other group owns.
    owned = []
    for spec, parts in found:
        own = {t for t in parts.values()} - {t for s2, p2 in found if s2 is not spec for t in p2.values()}
        if own:
            owned.append((spec, parts))
    used = {t for _, parts in owned for t in parts.values()}
    return owned, [t for t in suffixes.values() if t not in used]


def build_map(path: str, tensors: Mapping[str, Any], targets: Mapping[str, tuple[int, ...]],
              names: Mapping[str, tuple[Any, ...]], *, infer_targets: bool = False,
              shapes_from_adapter: bool = False) -> AdapterMap:
    """The adapter map of the file at `path`, whose header tensors are `tensors` (name -> object
    with `.shape`), against a base with `targets` (canonical key -> shape). `names`: module name
    -> ModuleTarget(key, rows) candidates (archs/keymap.module_names). With `infer_targets` (no base
    and no inventory), a module that maps to nothing becomes the key MODULE.weight with the shape
    the adapter implies. With `shapes_from_adapter` (no base: `targets` is an architecture's
    reference inventory, used for names and fused rows), a whole-weight target takes the shape the
    adapter implies, so a scaled-down model's LoRA reads like a full one; the base it is added to
    is checked against it then."""
    modules, unknown = _groups(tensors)
    dialect = dialect_of(modules) if modules else "native"
    problems: list[tuple[str, str]] = []
    notes: list[str] = []
    # PEFT's adapter_config.json is the config of the PEFT adapter beside it: a kohya file that
    # happens to share its folder is not configured by it.
    peft_names = any(".lora_A." in n or n.endswith((".lora_A.weight", "lora_magnitude_vector", "lora_embedding_A"))
                     for n in tensors)
    config, config_problem = read_peft_config(path) if dialect == "peft" or peft_names else (None, None)
    if config_problem:
        problems.append(("adapter_config.json", config_problem))
    if dialect == "peft" and config is None and not config_problem:
        problems.append((os.path.basename(path), "a PEFT adapter (`base_model.model.` names) needs the "
                                                 "adapter_config.json it was saved with, beside the file: "
                                                 "it holds lora_alpha, which sets the scale"))
    # PEFT saves a copy of the base weight of an adapted embedding (`….base_layer.weight`, its
    # `save_embedding_layers`): the base's own weight, not an update.
    unused = list(unknown)
    per_target: dict[str, list[Piece]] = {}
    inferred_shapes: dict[str, tuple[int, ...]] = {}
    no_alpha = False
    base_kinds: list[tuple[str, str]] = []
    for module, suffixes in modules.items():
        groups, leftover = _kind_groups(suffixes, tensors)
        unused.extend(leftover)
        if not groups:
            continue
        found = _resolve(module, names)
        for spec, parts in groups:
            if spec.group_needs_base(parts):
                base_kinds.append((module, spec.name + (" (DoRA)" if "magnitude" in parts else "")))
            shapes = {p: tuple(tensors[t].shape) for p, t in parts.items()}
            params = config.params(module) if config is not None else {}
            inferred = spec.shape(shapes, params) if spec.shape is not None else Inferred()
            if inferred.problem:
                problems.append((module, inferred.problem))
                continue
            if "config_rank" in params:
                if inferred.rank is not None and params["config_rank"] != inferred.rank:
                    problems.append((module, f"adapter_config.json says rank {params['config_rank']}, the "
                                             f"tensors have rank {inferred.rank}"))
                    continue
                params.pop("config_rank")
            if spec.name in ("lora", "loha", "lokr") and "alpha" not in parts and "alpha" not in params:
                no_alpha = no_alpha or spec.name == "lora"
            mapped = found
            if not mapped and infer_targets and inferred.shape is not None:
                key = _bare(module) + ".weight"
                inferred_shapes[key] = inferred.shape
                mapped = [_Target(key, None)]
            if not mapped:
                unused.extend(parts.values())
                continue
            piece_params = tuple(sorted(params.items()))
            for t in mapped:
                key = t.key if spec.target == "weight" else _bias_of(t.key)
                full = targets.get(key, inferred_shapes.get(key))
                if shapes_from_adapter and t.rows is None and full is not None and inferred.shape is not None:
                    full = inferred_shape_for(inferred.shape, full, spec.target)
                    inferred_shapes[key] = full
                if full is None:
                    unused.extend(parts.values())
                    continue
                want = full if t.rows is None else (t.rows[1] - t.rows[0],) + tuple(full[1:])
                problem = _fit(inferred, want, full)
                if problem:
                    problems.append((module, f"does not fit `{key}`: {problem}"))
                    continue
                per_target.setdefault(key, []).append(
                    Piece(module, spec.name, tuple(sorted(parts.items())), t.rows, tuple(want), inferred.rank,
                          piece_params, spec.group_needs_base(parts)))
    if no_alpha:
        notes.append(NO_ALPHA_NOTE)
    order = list(targets) + [k for k in inferred_shapes if k not in targets]
    mapped_targets = tuple((k, tuple(per_target[k])) for k in order if k in per_target)
    for key, pieces in mapped_targets:
        problem = _overlap(pieces)
        if problem:
            problems.append((key, problem))
    shapes = tuple((k, tuple(inferred_shapes.get(k, targets.get(k)))) for k, _ in mapped_targets)
    unused = [n for n in unused if not (n.startswith(PEFT_PREFIX) and ".base_layer." in n)]
    return AdapterMap(dialect, mapped_targets, shapes, tuple(sorted(set(unused))), tuple(problems), tuple(notes),
                      config.path if config else None, tuple(base_kinds))


@dataclass(frozen=True)
class _Target:
    key: str
    rows: tuple[int, int] | None


def inferred_shape_for(shape: tuple[int, ...], reference: tuple[int, ...], target: str) -> tuple[int, ...]:
    """The target shape an adapter implies, laid out like the reference key (a LoRA for a 1×1
    convolution may be stored as a matrix)."""
    if target == "bias":
        return (shape[0],)
    if len(reference) == 4 and len(shape) == 2:
        return tuple(shape) + (1, 1)
    if len(reference) == 2 and len(shape) == 4 and shape[2:] == (1, 1):
        return tuple(shape[:2])
    return tuple(shape)


def _bare(module: str) -> str:
    return module[len(PEFT_PREFIX):] if module.startswith(PEFT_PREFIX) else module


def _resolve(module: str, names: Mapping[str, tuple[Any, ...]]) -> list:
    """The targets a module name maps to: as written, then without PEFT's wrapper prefix (PEFT on a
    transformers model writes `base_model.model.` + the model's own module path)."""
    found = names.get(module)
    if found:
        return list(found)
    if module.startswith(PEFT_PREFIX):
        bare = module[len(PEFT_PREFIX):]
        for candidate in (bare, "unet." + bare, "transformer." + bare):
            if names.get(candidate):
                return list(names[candidate])
    return []


def _bias_of(key: str) -> str:
    return key[: -len("weight")] + "bias" if key.endswith("weight") else key + ".bias"


def _fit(inferred: Inferred, want: tuple[int, ...], full: tuple[int, ...]) -> str | None:
    shape = inferred.shape
    if inferred.out is not None and inferred.out != want[0]:
        return f"the adapter updates {inferred.out} output rows, the base has {want[0]}"
    if shape is None:
        return None
    numel = 1
    for d in shape:
        numel *= d
    want_numel = 1
    for d in want:
        want_numel *= d
    if shape[0] != want[0] or numel != want_numel:
        return f"the adapter makes a {list(shape)} delta, the base's tensor is {list(want)}"
    return None


def _overlap(pieces: tuple[Piece, ...]) -> str | None:
    whole = [p for p in pieces if p.rows is None and p.kind != "diff_bias"]
    if len(whole) > 1:
        return "updated by more than one adapter module: " + ", ".join(p.module for p in whole)
    spans = sorted(p.rows for p in pieces if p.rows is not None)
    for a, b in zip(spans, spans[1:]):
        if b[0] < a[1]:
            return "two adapter modules update overlapping rows"
    if whole and spans:
        return "updated both as a whole and by row slices"
    return None
