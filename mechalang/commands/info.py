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


def info_command(arch: str | None = None, *, verbose: bool = False, methods: bool = False,
                 plugins: Iterable[str] = (), format: str = "text", kinds: bool = False) -> int:
    problems = pipeline.load_plugins(plugins)
    if problems:
        return fail(problems, None, format)
    emit(pipeline.architecture_problems(), None, format)
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
