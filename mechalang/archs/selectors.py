"""Selectors over an architecture's keys: matching a selector against a key, resolving a key's
value from a list of rules, and naming runs of blocks. Shared by the checker, lowering and
`mecha info`; the checker's diagnostics about selectors are in check/selectors.py.

For each key the **last** matching non-default rule wins; a `default` rule applies only where no
other rule matches (the last `default` if there are several); with neither, `resolve` gives None
and the method's own default applies.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any, Sequence

from ..diagnostics import Span
from ..syntax.ast import SelAnd, SelDefault, SelGlob, SelKey, SelName, SelNot, SelRange
from .arch import Arch, KeyInfo


@dataclass(frozen=True)
class Rule:
    selector: Any      # a Selector node
    value: object
    span: Span | None = None


_NUM = re.compile(r"^(.*?)(\d+)$")


def summarize_blocks(names: Sequence[str]) -> str:
    out: list[str] = []
    i = 0
    while i < len(names):
        m = _NUM.match(names[i])
        j = i
        if m:
            prefix, num = m.group(1), m.group(2)
            k = int(num)
            while j + 1 < len(names):
                m2 = _NUM.match(names[j + 1])
                if not m2 or m2.group(1) != prefix or int(m2.group(2)) != k + 1:
                    break
                j += 1
                k += 1
        if j - i >= 2:
            out.append(f"{names[i]}..{names[j]}")
        else:
            out.extend(names[i:j + 1])
        i = j + 1
    return ", ".join(out)




def selector_matches(sel, info: KeyInfo, arch: Arch) -> bool:
    """Whether `sel` selects the key `info` describes. `default` matches nothing here."""
    if isinstance(sel, SelName):
        kind = arch.kind_of(sel.name)
        if kind == "block":
            return info.block == sel.name
        if kind == "class":
            return sel.name in info.classes
        if kind == "component":
            return info.component == sel.name
        return False
    if isinstance(sel, SelRange):
        if info.block is None:
            return False
        k = arch.block_sort_key(info.block)
        a = arch.block_sort_key(sel.start)
        b = arch.block_sort_key(sel.end)
        if k is None or a is None or b is None:
            return False
        return a <= k <= b
    if isinstance(sel, SelGlob):
        return info.block is not None and fnmatchcase(info.block, sel.pattern)
    if isinstance(sel, SelKey):
        if fnmatchcase(info.key, sel.pattern):
            return True
        canon = arch.canonical(info.key)
        return canon != info.key and fnmatchcase(canon, sel.pattern)
    if isinstance(sel, SelAnd):
        return selector_matches(sel.left, info, arch) and selector_matches(sel.right, info, arch)
    if isinstance(sel, SelNot):
        return not selector_matches(sel.operand, info, arch)
    return False  # SelDefault


def resolve(rules: Sequence[Rule], info: KeyInfo, arch: Arch) -> tuple[object, int] | None:
    """(value, index of the rule) for the key `info` describes: the last matching non-default
    rule, else the last `default` rule, else None."""
    default_idx = None
    for i in range(len(rules) - 1, -1, -1):
        sel = rules[i].selector
        if isinstance(sel, SelDefault):
            if default_idx is None:
                default_idx = i
            continue
        if selector_matches(sel, info, arch):
            return rules[i].value, i
    if default_idx is not None:
        return rules[default_idx].value, default_idx
    return None
