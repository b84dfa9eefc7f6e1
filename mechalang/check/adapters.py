"""`lora(path, base=, arch=, sha256=)`: an adapter file (LoRA of any dialect, LyCORIS, OFT) as a
`Delta[A]` whose keys are the keys of the base it updates, checked from headers alone.

The architecture and the target shapes come from `base=` (a model value), else from `arch=`'s key
inventory, else from the architecture whose names the adapter's module names match best. Every
problem the header shows is reported against the call: tensors that update nothing (E0270, a
warning with --allow-unused), groups that do not fit their target (E0271), kinds that need the base
weight without one (E0272), a PEFT adapter without its config (E0273).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..archs import registry as arch_registry
from ..diagnostics import Span, codes, warning
from ..graph.nodes import KeyMeta, LoadInfo
from .builtins import file_call_args, get_arch, open_file
from .values import POISON, ModelValue, type_name

SHOWN = 5  # names listed in one diagnostic


def lora_builtin(ev, e, args, kwargs) -> Any:
    parsed = file_call_args(ev, "lora", e, args, kwargs, ("base", "arch", "sha256"))
    if parsed is POISON:
        return POISON
    path_v, path_span, arch, sha = parsed
    base = None
    if "base" in kwargs:
        bv, bspan = kwargs["base"]
        if not isinstance(bv, ModelValue) or bv.node.space != "weight":
            return ev.err(codes.WRONG_ARGUMENT_TYPE, f"base= needs a Model, found {type_name(bv)}", bspan,
                          help='lora("style.safetensors", base=model("base.safetensors"))')
        base = bv.node
    return load_adapter(ev, path_v, path_span or e.span, base=base, arch=arch, sha256=sha, span=e.span)


def load_adapter(ev, path: str, path_span: Span | None, *, base=None, arch=None, sha256: str | None = None,
                 span: Span | None = None) -> Any:
    span = span or path_span
    opened = open_file(ev, path, path_span, "adapter", ev.module_dir())
    if opened is POISON:
        return POISON
    found, header = opened
    amap, arch = map_adapter(str(found), header, base, arch)
    if amap is None:
        return ev.err(codes.NOT_AN_ADAPTER, f"`{path}` has no adapter tensors (LoRA up/down, LoHa, LoKr, (IA)³, "
                                            f"diff, OFT)", path_span, label="not an adapter",
                      help="a full model is merged with model(...), not lora(...)")
    return _report_and_build(ev, path, found, header, amap, arch, base, sha256, path_span, span)


def map_adapter(path: str, header, base, arch):
    """(AdapterMap, architecture) for an adapter file's header, or (None, None) when the file holds no
    adapter tensors at all."""
    from ..archs.keymap import has_keymap, module_names
    from ..kinds.adapter import build_map, is_adapter

    if not is_adapter(header.tensors):
        return None, None
    if base is not None:
        targets = {k: m.shape for k, m in base.keys.items()}
        arch = base.arch
        return build_map(path, header.tensors, targets, module_names(arch.name, targets)), arch
    if arch is not None:
        targets = _inventory_shapes(arch)
        return build_map(path, header.tensors, targets, module_names(arch.name, targets),
                         infer_targets=not targets, shapes_from_adapter=True), arch
    # No base and no arch: the architecture whose module names the adapter's match best.
    from ..kinds.adapter import _groups, _resolve

    modules = list(_groups(header.tensors)[0])
    best = None
    for candidate in arch_registry.all_archs():
        targets = _inventory_shapes(candidate)
        if not targets:
            continue
        names = module_names(candidate.name, targets)
        # ties (a layout and its other spellings, sd1 and sd1-kohya) go to the architecture with a key map
        score = (sum(1 for m in modules if _resolve(m, names)), has_keymap(candidate.name))
        if score[0] and (best is None or score > best[0]):
            best = (score, candidate, targets, names)
    if best is not None:
        _, arch, targets, names = best
        return build_map(path, header.tensors, targets, names, shapes_from_adapter=True), arch
    generic = get_arch("generic")
    return build_map(path, header.tensors, {}, {}, infer_targets=True), generic


def _inventory_shapes(arch) -> dict[str, tuple[int, ...]]:
    inv = getattr(arch, "inventory", None) or {}
    return {k: tuple(s.shape) for k, s in inv.items()}


def _listing(items: list[str]) -> str:
    shown = ", ".join(f"`{x}`" for x in items[:SHOWN])
    return shown + (f" and {len(items) - SHOWN} more" if len(items) > SHOWN else "")


def _report_and_build(ev, path, found: Path, header, amap, arch, base, sha256, path_span, span) -> Any:
    if amap.base_kinds and base is None:
        modules = [f"`{m}` ({k})" for m, k in amap.base_kinds]
        ev.err(codes.ADAPTER_NEEDS_BASE, f"`{path}`: the deltas of {', '.join(modules[:SHOWN])}"
                                         f"{f' and {len(modules) - SHOWN} more' if len(modules) > SHOWN else ''} "
                                         f"depend on the base weights", span, label="needs base=",
               help=f'lora("{path}", base=model("…"))')
        return POISON
    bad = False
    fits = [(w, p) for w, p in amap.problems if w not in ("adapter_config.json", found.name)]
    for where, problem in amap.problems:
        if (where, problem) not in fits:
            ev.err(codes.ADAPTER_CONFIG, f"`{path}`: {problem}", path_span, label="this adapter")
            bad = True
    for where, problem in fits[:SHOWN]:
        ev.err(codes.ADAPTER_DOES_NOT_FIT, f"`{path}`: `{where}` {problem}", path_span, label="this adapter",
               notes=[f"and {len(fits) - SHOWN} more modules of `{path}` with problems"]
               if len(fits) > SHOWN and (where, problem) == fits[SHOWN - 1] else [])
        bad = True
    if amap.unused:
        target = f"the base's {arch.name} keys" if base is not None else f"any {arch.name} key"
        message = (f"`{path}`: {len(amap.unused)} adapter tensor{'s' if len(amap.unused) != 1 else ''} "
                   f"update{'s' if len(amap.unused) == 1 else ''} no key: {_listing(list(amap.unused))}")
        notes = [f"({amap.dialect} names) nothing in {target} matches them"]
        if base is not None:  # an adapter for another architecture: say which its names are
            _, own = map_adapter(str(found), header, None, None)
            if own is not None and own.name not in (arch.name, "generic"):
                notes.append(f"its module names are {own.name}'s: is it an adapter for {own.name}?")
        if ev.options.allow_unused:
            ev.report(warning(codes.ADAPTER_UNUSED_ALLOWED, message + " (left out: --allow-unused)", path_span,
                              notes=notes))
        else:
            ev.err(codes.ADAPTER_UNUSED_KEYS, message, path_span, label="this adapter", notes=notes,
                   help="is it for another architecture, or another base? --allow-unused leaves them out")
            bad = True
    if not amap.targets and not bad:
        ev.err(codes.ADAPTER_UNUSED_KEYS, f"`{path}` updates no key of {arch.name}", path_span, label="this adapter")
        bad = True
    if bad:
        return POISON
    for note in amap.notes:
        ev.report(warning(codes.ADAPTER_DEFAULT_ALPHA, f"`{path}`: {note}", path_span))
    shapes = dict(amap.shapes)
    keys: dict[str, KeyMeta] = {}
    for key, pieces in amap.targets:
        dtype = header.tensors[next(t for part, t in pieces[0].parts if part != "alpha")].dtype
        if base is not None and key in base.keys:
            dtype = base.keys[key].dtype
        keys[key] = KeyMeta(dtype, tuple(shapes[key]))
    # The same file read against another base is another value (its keys take that base's shapes
    # and dtypes): the base is part of its identity.
    info = LoadInfo(str(found.resolve()), found.stem, header, (), sha256, adapter=amap,
                    base=base.id if base is not None else (arch.name if arch is not None else None))
    args = (base,) if amap.needs_base else ()
    node = ev.builder.node("adapter", args, space="delta", arch=arch, keys=keys, load=info, origin=span)
    return ModelValue(node)
