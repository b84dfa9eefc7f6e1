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


def info_command(arch: str | None = None, *, verbose: bool = False, methods: bool = False,
                 plugins: Iterable[str] = (), format: str = "text") -> int:
    problems = pipeline.load_plugins(plugins)
    if problems:
        return fail(problems, None, format)
    emit(pipeline.architecture_problems(), None, format)
    if methods:
        sys.stdout.write(methods_text(verbose))
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
