"""`mecha info [ARCH] [-v]`, `mecha info --methods`: architectures, an architecture's components,
blocks and classes (and keys), or the merge methods."""

from __future__ import annotations

import sys
from typing import Iterable

from .. import pipeline
from ..archs.info import closest_arch_name, info_text
from ..archs.registry import all_archs
from ..diagnostics import codes, error
from .output import emit, fail


def methods_text(verbose: bool = False) -> str:
    """Every method: signature, formula, how it differs from the peers' (and with -v, its whole
    documentation)."""
    import textwrap

    from ..methods.registry import REGISTRY

    out = []
    for spec in REGISTRY.all():
        out.append(spec.signature())
        if spec.formula:
            out.append(f"    {spec.formula}" + ("   (element-wise)" if spec.elementwise else ""))
        if spec.source != "builtin":
            out.append(f"    (from {spec.source})")
        if verbose and spec.doc:
            out.extend(textwrap.indent(spec.doc, "    ").splitlines())
        elif spec.peer_notes:
            out.extend(textwrap.wrap(spec.peer_notes, 96, initial_indent="    ", subsequent_indent="    "))
    return "\n".join(out) + "\n"


def kinds_text(verbose: bool = False) -> str:
    """Every model kind: its formula, the tensor names that make it (every dialect's spelling),
    whether it needs the base weight (and with -v, its whole documentation)."""
    import textwrap

    from ..kinds import KINDS

    out = ["Adapter kinds (lora(\"file\", base=model) reads any of them; 0.5 * lora(…) is half the delta):", ""]
    for spec in KINDS.all():
        out.append(f"{spec.name}" + (f"   (from {spec.source})" if spec.source != "builtin" else ""))
        out.append(f"    {spec.formula}")
        by_part: dict[str, list[str]] = {}
        for suffix, part in spec.parts.items():
            by_part.setdefault(part, []).append(suffix)
        required = {p for alt in spec.required for p in alt.split("|")}
        names = "; ".join(f"{part}{'' if part in required else '?'}: {', '.join('.' + s for s in suffixes)}"
                          for part, suffixes in by_part.items())
        out.extend(textwrap.wrap("tensors: " + names, 96, initial_indent="    ", subsequent_indent="      "))
        if spec.needs_base:
            when = "always" if spec.needs_base is True else "with " + ", ".join(spec.needs_base)
            out.append(f"    needs base= ({when}): the delta depends on the base weight")
        if spec.target != "weight":
            out.append(f"    updates the module's {spec.target}")
        if verbose and spec.doc:
            out.extend(textwrap.indent(spec.doc, "    ").splitlines())
        out.append("")
    out.append("Dialects (module names): kohya/A1111/LyCORIS lora_unet_… lora_te_… lora_te1_/te2_; PEFT "
               "base_model.model.… (+ adapter_config.json); diffusers/AI-toolkit unet./transformer./text_encoder.…; "
               "ComfyUI diffusion_model.…; and the checkpoint's own module paths.")
    return "\n".join(textwrap.fill(line, 110, subsequent_indent="    ") if len(line) > 110 else line
                     for line in out) + "\n"


def looks_like_path(text: str) -> bool:
    import os

    from ..sources import name_suffixes

    return (os.path.exists(text) or "/" in text or os.sep in text
            or text.lower().endswith(tuple(name_suffixes()) + (".sft", ".pth", ".json")))


def source_text(path: str, verbose: bool = False) -> str:
    """A model source as `mecha info PATH` shows it: kind, architecture, size, keys and dtypes
    (raises sources.SourceError)."""
    from collections import Counter

    from ..archs.detect import detect_keys
    from ..kinds.adapter import dialect_of, is_adapter
    from ..paths import shown_path
    from ..sources import Derived, open_source
    from ..units import format_bytes

    src = open_source(path)
    if is_adapter(src.tensors):
        arch = f"adapter ({dialect_of(src.tensors)} names)"
    elif src.arch:  # the source's own layout says (a diffusers pipeline's class)
        arch = src.arch
    else:
        d = detect_keys(list(src.tensors), {k: t.shape for k, t in src.tensors.items()})
        arch = d.arch.name + ("" if d.confident or d.arch.name == "generic" else " (a partial match)")
    dtypes = Counter(t.dtype for t in src.tensors.values())
    derived = sum(1 for t in src.tensors.values() if isinstance(t, Derived))
    out = [f"{shown_path(path)}",
           f"  kind: {src.kind}" + (f" ({src.note})" if src.note else ""),
           f"  arch: {arch}",
           f"  size: {format_bytes(src.size)} in {len(src.files)} file{'s' if len(src.files) != 1 else ''}",
           f"  keys: {len(src.tensors)} (" + ", ".join(f"{n} {dt}" for dt, n in dtypes.most_common()) + ")"
           + (f", {derived} derived from stored tensors" if derived else "")]
    if src.extra_files:
        import os

        out.append("  other files: " + ", ".join(os.path.basename(f) for f in src.extra_files))
    if verbose:
        for f in src.files:
            out.append(f"  file {shown_path(f.path)}: {format_bytes(f.size)}")
        for name, t in src.tensors.items():
            how = f" = {t.op}(" + ", ".join(a.name for a in t.args) + ")" if isinstance(t, Derived) else ""
            out.append(f"    {name}  {t.dtype} {list(t.shape)}{how}")
    if src.metadata and verbose:
        for k, v in src.metadata.items():
            out.append(f"  metadata {k}: {v[:100]}{'…' if len(v) > 100 else ''}")
    return "\n".join(out) + "\n"


def info_command(arch: str | None = None, *, verbose: bool = False, methods: bool = False,
                 plugins: Iterable[str] = (), format: str = "text", kinds: bool = False) -> int:
    problems = pipeline.load_plugins(plugins)
    if problems:
        return fail(problems, None, format)
    emit(pipeline.architecture_problems(), None, format)
    if arch is not None and looks_like_path(arch) and info_text(arch, verbose) is None:
        from ..sources import SourceError

        try:
            sys.stdout.write(source_text(arch, verbose))
        except SourceError as e:
            return fail([error(codes.MODEL_UNREADABLE, f"cannot read `{arch}`: "
                               + (f"{e.path}: " if e.path.rstrip("/") != arch.rstrip("/") else "")
                               + e.message, None)], None, format)
        return 0
    if methods:
        sys.stdout.write(methods_text(verbose))
        return 0
    if kinds:
        sys.stdout.write(kinds_text(verbose))
        return 0
    text = info_text(arch, verbose)
    if text is None:
        sugg = closest_arch_name(arch)
        return fail([error(codes.UNKNOWN_ARCH, f"unknown architecture `{arch}`", None,
                           help=f"did you mean `{sugg}`?" if sugg else None,
                           notes=["known architectures: " + ", ".join(sorted(a.name for a in all_archs()))])],
                    None, format)
    sys.stdout.write(text)
    return 0
