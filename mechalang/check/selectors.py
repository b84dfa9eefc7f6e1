"""Checking hyperparameter-map selectors against an architecture and a model's keys, and reading
supermerger-style block-weight strings. (Matching and resolving are in archs/selectors.py.)

Diagnostic codes:

| code  | what |
|-------|------|
| E0311 | unknown selector name (with did-you-mean) |
| E0312 | an end of a range is not a block |
| E0313 | a range whose ends are reversed |
| E0314 | a block glob that matches no block name |
| E0315 | `default` inside `&` or `!` |
| E0316 | a rule that matches no key of the model |
| E0317 | `mbw` for an architecture without a block-weight convention |
| E0318 | `mbw` string with the wrong number of values |
| E0319 | `mbw` value that is not a finite number |
| W0311 | a rule that never applies: later rules win on every key it matches |
| W0312 | a `default` that never applies |
"""

from __future__ import annotations

import math
from fnmatch import fnmatchcase
from typing import Iterable, Sequence

from ..archs.arch import Arch
from ..archs.selectors import Rule, selector_matches, summarize_blocks
from ..diagnostics import Diagnostic, Label, Span, codes, did_you_mean, error, warning
from ..syntax.ast import SelAnd, SelDefault, SelGlob, SelKey, SelName, SelNot, SelRange
from ..syntax.printer import print_selector as selector_text
from ..syntax.printer import quote as _quote

# ------------------------------------------------------------------------------------------------
# Checking a selector against an architecture


def check_selector(sel, arch: Arch) -> list[Diagnostic]:
    """Problems with a selector that show without any model's keys."""
    out: list[Diagnostic] = []
    _check(sel, arch, out, top=True)
    return out


def _check(sel, arch: Arch, out: list[Diagnostic], top: bool) -> None:
    if isinstance(sel, SelDefault):
        if not top:
            out.append(error(codes.DEFAULT_COMBINED, "`default` cannot be combined with `&` or `!`", sel.span,
                             label="here",
                             help="`default` applies to keys no other rule matches; "
                                  "write it as a rule of its own"))
        return
    if isinstance(sel, SelName):
        if arch.kind_of(sel.name) is None:
            out.append(_unknown_name(sel.name, arch, sel.span))
        return
    if isinstance(sel, SelRange):
        bad = False
        for end, which in ((sel.start, "start"), (sel.end, "end")):
            if not arch.is_block(end):
                bad = True
                kind = arch.kind_of(end)
                if kind is not None:
                    msg = f"the {which} of a range must be a block; `{end}` is a {kind} of {arch.name}"
                    out.append(error(codes.RANGE_END_NOT_BLOCK, msg, sel.span, label="not a block",
                                     help="ranges go over blocks in order: "
                                          f"{_block_summary(arch)}"))
                else:
                    sugg = did_you_mean(end, _block_names(arch))
                    out.append(error(codes.RANGE_END_NOT_BLOCK, f"`{end}` is not a block of {arch.name}", sel.span,
                                     label="unknown block",
                                     help=f"did you mean `{sugg}`?" if sugg
                                     else f"its blocks: {_block_summary(arch)}"))
        if not bad:
            a, b = arch.block_sort_key(sel.start), arch.block_sort_key(sel.end)
            if a is not None and b is not None and a > b:
                out.append(error(codes.RANGE_REVERSED, f"range `{sel.start}..{sel.end}` is reversed: "
                                          f"`{sel.start}` comes after `{sel.end}`", sel.span,
                                 label="empty range",
                                 help=f"write `{sel.end}..{sel.start}`"))
        return
    if isinstance(sel, SelGlob):
        names = _block_names(arch)
        if not any(fnmatchcase(b, sel.pattern) for b in names) and not (
                arch.is_family and not arch.specialized and _glob_may_match_open(sel.pattern, arch)):
            others = [n for n, k in arch.vocabulary().items() if k != "block" and fnmatchcase(n, sel.pattern)]
            help_ = (f"a quoted glob selects blocks; `{others[0]}` is a {arch.kind_of(others[0])}, "
                     f"write it without quotes" if others
                     else f"the blocks of {arch.name}: {_block_summary(arch)}; "
                          f"to match key names use key({_quote(sel.pattern)})")
            out.append(error(codes.GLOB_MATCHES_NO_BLOCK, f"the glob {_quote(sel.pattern)} matches no block of {arch.name}",
                             sel.span, label="no block", help=help_))
        return
    if isinstance(sel, SelKey):
        return  # checked against the keys by rule_diagnostics
    if isinstance(sel, SelAnd):
        _check(sel.left, arch, out, top=False)
        _check(sel.right, arch, out, top=False)
        return
    if isinstance(sel, SelNot):
        _check(sel.operand, arch, out, top=False)
        return
    out.append(error(codes.UNKNOWN_SELECTOR, f"not a selector: {sel!r}", getattr(sel, "span", None)))


def _unknown_name(name: str, arch: Arch, span: Span | None) -> Diagnostic:
    vocab = arch.vocabulary()
    sugg = did_you_mean(name, list(vocab))
    if sugg:
        help_ = f"did you mean `{sugg}` (a {vocab[sugg]})?"
    else:
        parts = []
        if arch.components:
            parts.append("components: " + ", ".join(arch.components))
        parts.append("blocks: " + _block_summary(arch))
        if arch.classes:
            parts.append("classes: " + ", ".join(arch.classes))
        help_ = "; ".join(parts)
    return error(codes.UNKNOWN_SELECTOR, f"{arch.name} has no component, block or class `{name}`", span,
                 label="unknown name", help=help_,
                 notes=("`mecha info " + arch.name + "` lists them",))


def _block_names(arch: Arch) -> list[str]:
    return list(arch.blocks)


def _glob_may_match_open(pattern: str, arch: Arch) -> bool:
    # An unspecialized family: try the numbered templates with a few numbers.
    for t in arch.block_templates:
        for n in (0, 1, 7, 10, 99):
            name = t.replace("{n}", str(n)).replace("{path}", "x")
            if fnmatchcase(name, pattern):
                return True
    return False


def _block_summary(arch: Arch) -> str:
    """`BASE, IN00..IN11, M00, OUT00..OUT11` (runs of numbered blocks collapsed)."""
    names = list(arch.blocks)
    if arch.is_family and not arch.specialized:
        names += list(arch.block_templates)
    return summarize_blocks(names) or "(none)"


def rule_diagnostics(rules: Sequence[Rule], arch: Arch, keys: Iterable[str]) -> list[Diagnostic]:
    """Rules that match none of `keys` (errors) and rules that never win on any key (warnings).

    Rules whose selector `check_selector` rejects are skipped (they have their own error).
    Non-default rules that share one span (the rules `parse_mbw` makes from one string) are
    judged as a group: reported only if none of them matches a key, or none of them ever wins."""
    rules = list(rules)
    infos = [arch.classify(k) for k in keys]
    if not infos:
        return []
    valid = [not any(d.is_error for d in check_selector(r.selector, arch)) for r in rules]
    n = len(rules)
    matches: list[list[int]] = [[] for _ in range(n)]   # key indices each rule matches
    winners: list[int | None] = []
    for ki, info in enumerate(infos):
        win = None
        for i in range(n):
            sel = rules[i].selector
            if isinstance(sel, SelDefault) or not valid[i]:
                continue
            if selector_matches(sel, info, arch):
                matches[i].append(ki)
                win = i
        winners.append(win)
    won = set(w for w in winners if w is not None)
    defaults = [i for i in range(n) if isinstance(rules[i].selector, SelDefault)]

    # Non-default rules sharing one span came from one source (a block-weight string): they
    # are judged together, so a block with no keys in this file (BASE of a UNet-only file) or
    # one block overridden later is not reported on its own.
    groups: dict[object, list[int]] = {}
    span_count: dict[object, int] = {}
    for i in range(n):
        if rules[i].span is not None:
            span_count[rules[i].span] = span_count.get(rules[i].span, 0) + 1
    for i in range(n):
        if isinstance(rules[i].selector, SelDefault) or not valid[i]:
            continue
        sp = rules[i].span
        gid = sp if sp is not None and span_count[sp] > 1 else ("rule", i)
        groups.setdefault(gid, []).append(i)

    out: list[Diagnostic] = []
    for members in groups.values():
        i = members[0]
        r = rules[i]
        single = len(members) == 1
        text = selector_text(r.selector)
        if not any(matches[m] for m in members):
            if single:
                out.append(error(codes.RULE_MATCHES_NOTHING, f"`{text}` matches no key of this {arch.name} model",
                                 r.span, label="selects nothing",
                                 help=_no_match_help(r.selector, arch)))
            else:
                out.append(error(codes.RULE_MATCHES_NOTHING, f"none of these {len(members)} rules matches a key of "
                                          f"this {arch.name} model", r.span,
                                 label="selects nothing"))
        elif not any(m in won for m in members):
            later = sorted({winners[k] for m in members for k in matches[m]
                            if winners[k] is not None})
            secondary = [Label(rules[j].span, "wins here") for j in later[:3] if rules[j].span]
            names = ", ".join(f"`{selector_text(rules[j].selector)}`" for j in later[:3])
            what = (f"`{text}` never applies: later rules win on every key it matches" if single
                    else f"these {len(members)} rules never apply: later rules win on every key "
                         f"they match")
            out.append(warning(codes.RULE_NEVER_APPLIES, what, r.span, label="overridden", secondary=secondary,
                               help=f"overridden by {names}" + (" ..." if len(later) > 3 else "")
                                    + "; later rules win, so put broader rules first"))
    if defaults:
        uncovered = any(w is None for w in winners)
        for j, i in enumerate(defaults):
            r = rules[i]
            if j < len(defaults) - 1:
                last = rules[defaults[-1]]
                out.append(warning(codes.DEFAULT_NEVER_APPLIES, "this `default` never applies: a later `default` "
                                            "replaces it", r.span, label="replaced",
                                   secondary=[Label(last.span, "the default that applies")]
                                   if last.span else ()))
            elif not uncovered:
                out.append(warning(codes.DEFAULT_NEVER_APPLIES, "`default` never applies: other rules match every key",
                                   r.span, label="unused"))
    return out


def _no_match_help(sel, arch: Arch) -> str | None:
    if isinstance(sel, SelKey):
        return "key() globs are matched against whole key names; `*` also matches dots"
    if isinstance(sel, SelAnd):
        return "no key matches both sides of `&`"
    return None


# ------------------------------------------------------------------------------------------------
# Block-weight strings


def parse_mbw(arch: Arch, text: str, span: Span | None) -> tuple[list[Rule], list[Diagnostic]]:
    """A supermerger-style block-weight string (comma-separated, BASE first) as one rule per
    block, in the architecture's block-weight order."""
    blocks = list(arch.mbw_blocks)
    if not blocks:
        return [], [error(codes.NO_MBW_CONVENTION, f"{arch.name} has no block-weight string convention", span,
                          help="write a map instead: {IN00..IN05: 0.3, ...}")]
    fields = text.split(",")
    # a trailing comma is harmless
    if len(fields) > 1 and fields[-1].strip() == "":
        fields = fields[:-1]
    diags: list[Diagnostic] = []
    if len(fields) != len(blocks):
        got = 0 if text.strip() == "" else len(fields)
        help_ = f"one value per block: {summarize_blocks(blocks)}"
        if got == len(blocks) - 1 and blocks[0] == "BASE":
            help_ = ("this looks like a string without the BASE weight; put the weight of BASE "
                     "(text encoder, VAE) first")
        diags.append(error(codes.MBW_WRONG_COUNT, f"a block-weight string for {arch.name} has {len(blocks)} "
                                    f"values, this one has {got}", span,
                           label=f"{got} value{'s' if got != 1 else ''}", help=help_))
        return [], diags
    rules: list[Rule] = []
    offset = 0
    for idx, (fld, block) in enumerate(zip(fields, blocks)):
        s = fld.strip()
        try:
            v = float(s)
            ok = math.isfinite(v) and s != ""
        except ValueError:
            ok = False
        if not ok:
            lead = len(fld) - len(fld.lstrip())
            diags.append(error(codes.MBW_NOT_A_NUMBER, f"block-weight value {idx + 1} (block {block}) is not a "
                                        f"number: `{s}`" if s else
                                        f"block-weight value {idx + 1} (block {block}) is empty",
                               _sub_span(span, text, offset + lead, max(1, len(s))),
                               label="not a number",
                               help=f"values are numbers in the order {summarize_blocks(blocks)}"))
        else:
            rules.append(Rule(SelName(block, span=span), v, span))
        offset += len(fld) + 1
    if diags:
        return [], diags
    return rules, []


def _sub_span(span: Span | None, text: str, start: int, length: int) -> Span | None:
    """The part of a string literal's span covering text[start:start+length], when the literal is
    plain (one line, no escapes); else the whole span."""
    if span is None or span.line != span.end_line or span.end_col - span.col != len(text) + 2:
        return span
    col = span.col + 1 + start
    return Span(span.file, span.line, col, span.line, col + length)
