"""`mecha info [ARCH] [-v]`: the architectures, or one architecture's components, blocks, classes
(and with `-v` every key)."""

from __future__ import annotations

from collections import Counter

from ..diagnostics import did_you_mean
from .arch import Arch
from .registry import all_archs, get_arch


def closest_arch_name(name: str) -> str | None:
    """The architecture a misspelled name most likely means (by name, then by alias)."""
    archs = all_archs()
    sugg = did_you_mean(name, [x.name for x in archs])
    if sugg is None:
        alias = did_you_mean(name, [al for x in archs for al in x.aliases])
        sugg = get_arch(alias).name if alias else None
    return sugg


def info_text(arch: str | None, verbose: bool) -> str | None:
    """The table of architectures, or one architecture described; None if there is no such one."""
    if arch is None:
        return _table()
    a = get_arch(arch)
    return None if a is None else _details(a, verbose)


def _table() -> str:
    rows = [("name", "aliases", "keys", "description")]
    for a in sorted(all_archs(), key=lambda a: a.name):
        keys = str(len(a.inventory)) if a.inventory is not None else "pattern"
        rows.append((a.name, ", ".join(a.aliases) or "-", keys, a.description))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = []
    for i, r in enumerate(rows):
        lines.append("  ".join([r[0].ljust(widths[0]), r[1].ljust(widths[1]),
                                r[2].rjust(widths[2]) if i else r[2].ljust(widths[2]), r[3]]).rstrip())
        if i == 0:
            lines.append("  ".join("-" * w for w in widths) + "  " + "-" * 11)
    lines.append("")
    lines.append("`mecha info NAME` shows an architecture's components, blocks and classes; "
                 "`-v` also its keys.")
    return "\n".join(lines) + "\n"


def _details(a: Arch, verbose: bool) -> str:
    out: list[str] = []
    out.append(f"{a.name}: {a.description}" if a.description else a.name)
    if a.aliases:
        out.append(f"aliases: {', '.join(a.aliases)}")
    if a.source:
        out.append(f"defined in: {a.source}")
    infos = []
    if a.inventory is not None:
        required = sum(1 for s in a.inventory.values() if not s.optional)
        out.append(f"keys: {len(a.inventory)} ({required} required, "
                   f"{len(a.inventory) - required} optional)")
        infos = [a.classify(k) for k in a.inventory]
    else:
        out.append("keys: a pattern family (no fixed inventory; blocks come from a file's keys)")
    comp_n = Counter(i.component for i in infos)
    block_n = Counter(i.block for i in infos)
    class_n = Counter(c for i in infos for c in i.classes)

    def count(c: Counter, name: str) -> str:
        n = c.get(name, 0)
        return f"{n} key{'s' if n != 1 else ''}" if infos else ""

    out.append("")
    out.append("components:")
    if not a.components:
        out.append("  (none)")
    for c in a.components:
        out.append(f"  {c:<14} {count(comp_n, c)}".rstrip())

    out.append("")
    out.append("blocks (in block-weight order):")
    if a.is_family and not a.specialized:
        for b in a.block_entries:
            if b in a.block_templates:
                out.append(f"  {b:<14} numbered, one per index found in the file")
            else:
                out.append(f"  {b}")
    else:
        if not a.blocks:
            out.append("  (none)")
        for b in a.blocks:
            out.append(f"  {b:<14} {count(block_n, b)}".rstrip())
        unblocked = block_n.get(None, 0)
        if unblocked:
            out.append(f"  (in no block)  {unblocked} keys")
    if a.mbw_blocks:
        from .selectors import summarize_blocks

        out.append(f"block-weight strings (mbw): {len(a.mbw_blocks)} values: "
                   f"{summarize_blocks(list(a.mbw_blocks))}")

    out.append("")
    out.append("classes:")
    if not a.classes:
        out.append("  (none)")
    for c in a.classes:
        out.append(f"  {c:<14} {count(class_n, c)}".rstrip())

    if verbose and a.inventory is not None:
        out.append("")
        out.append("keys:")
        for k, spec in a.inventory.items():
            i = a.classify(k)
            shape = "[" + ", ".join(str(d) for d in spec.shape) + "]"
            flags = " optional" if spec.optional else ""
            classes = ",".join(sorted(i.classes)) or "-"
            out.append(f"  {k}  {shape} {spec.dtype}{flags}  component={i.component or '-'} "
                       f"block={i.block or '-'} classes={classes}")
            if spec.aliases:
                out.append(f"      aliases: {', '.join(spec.aliases)}")
    elif verbose:
        out.append("")
        out.append("keys: none listed (a pattern family)")
    return "\n".join(out) + "\n"
