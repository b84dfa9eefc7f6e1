"""What a program will do with each key, found from the key sets alone (no per-key expressions):
the keys a merge keeps from its first input because another input lacks them, the keys of
secondary inputs it leaves out, and hyperparameter maps that give no value for a key the merge
computes. `mecha check` reports these without lowering; `mecha run` reports the same ones.

The rules are those of graph/keys.py, applied to sets of keys: walking the graph from each export
(users before their inputs), a node is "visited" for the float keys its users compute through it;
a merge computes a visited key when every input has it and keeps it from its first input when
one lacks it. Non-float keys are copied from the first input that has them, so they are never
visited below the node that has them.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Iterable

from ..archs.selectors import resolve as resolve_rules
from ..diagnostics import Diagnostic, Span, codes, error
from ..dtypes import FLOAT_DTYPES
from ..methods.registry import REGISTRY
from .keys import is_union, left_out, primary
from .nodes import KeyMeta, Node, ShapeMask
from .program import Export, Program


@dataclass
class Coverage:
    """Keys a merge could not treat like the others, for the summary and for --strict."""

    # "kept" (taken unchanged from the first input) | "forced" (kept, as their shapes differ:
    # --force) | "left_out" | "mismatched"; "adapter": what an
    # adapter file updates (information, never an error under --strict)
    kind: str
    op: str
    origin: Span | None
    source: str  # the input they were kept from / only present in
    keys: list[str] = field(default_factory=list)

    @property
    def is_gap(self) -> bool:
        """Keys not every input has (what --strict refuses)."""
        return self.kind != "adapter"

    def describe(self) -> str:
        n = len(self.keys)
        if self.kind == "adapter":
            return self.source
        where = f" at {self.origin.file}:{self.origin.line}" if self.origin else ""
        pattern = summarize_keys(self.keys)
        if self.kind == "kept":
            return f"{n} key{'s' if n != 1 else ''} kept unchanged from `{self.source}` in `{self.op}`{where}: {pattern}"
        if self.kind == "forced":
            return (f"{n} key{'s' if n != 1 else ''} with other shapes in another input kept unchanged from "
                    f"`{self.source}` in `{self.op}`{where} (--force): {pattern}")
        if self.kind == "left_out":
            return f"{n} key{'s' if n != 1 else ''} only in `{self.source}` left out of `{self.op}`{where}: {pattern}"
        return f"{n} key{'s' if n != 1 else ''} of `{self.source}` with other shapes left out of `{self.op}`{where}: {pattern}"


def summarize_keys(keys: list[str], limit: int = 3) -> str:
    """A short description of a key list: common prefixes as globs (two name segments deep, or
    one when that gives too many groups, as for `model_ema.diffusion_modelinput_blocks00...`)."""
    def grouped(depth: int) -> dict[str, int]:
        groups: dict[str, int] = defaultdict(int)
        for k in keys:
            parts = k.split(".")
            groups[".".join(parts[:depth]) + (".*" if len(parts) > depth else "")] += 1
        return groups

    groups = grouped(2)
    if len(groups) > 4 * limit:
        groups = grouped(1)
    items = sorted(groups.items(), key=lambda kv: -kv[1])
    shown = ", ".join(g for g, _ in items[:limit])
    rest = len(items) - limit
    return shown + (f", … ({rest} more group{'s' if rest != 1 else ''})" if rest > 0 else "")


@dataclass
class Analysis:
    coverage: list[Coverage]
    diagnostics: list[Diagnostic]  # maps without a value for a computed key (E0310)
    total_keys: int  # tensors in all outputs


def node_name(program: Program, n: Node) -> str:
    """How reports name a node: a model by the recipe's name for it, a merge by its line."""
    if n.load is not None:
        return program.model_names.get(n.load.path, n.load.name)
    if n.op == "select" and isinstance(n.component, ShapeMask):  # --force's mask: the input itself
        return node_name(program, n.args[0])
    if n.origin is not None:
        return f"{n.op} at line {n.origin.line}"
    return n.op


class _Sets:
    """Set operations on frozensets of keys, remembered by the identity of their operands.

    Key sets are shared along chains (a merge has the key set of its first input), so a chain of
    10,000 merges asks the same few questions 10,000 times: each is answered once."""

    def __init__(self) -> None:
        self._memo: dict[tuple, tuple[tuple, frozenset[str]]] = {}

    def _cached(self, tag: str, operands: tuple, compute) -> frozenset[str]:
        k = (tag, *map(id, operands))
        hit = self._memo.get(k)
        if hit is None:  # the operands are kept, so their ids stay theirs
            hit = self._memo[k] = (operands, compute())
        return hit[1]

    def floats(self, keys: dict[str, KeyMeta]) -> frozenset[str]:
        return self._cached("f", (keys,), lambda: frozenset(k for k, m in keys.items() if m.dtype in FLOAT_DTYPES))

    def names(self, keys: dict[str, KeyMeta]) -> frozenset[str]:
        return self._cached("n", (keys,), lambda: frozenset(keys))

    def both(self, a: frozenset[str], b: frozenset[str]) -> frozenset[str]:
        if a is b:
            return a
        return self._cached("&", (a, b), lambda: a if a <= b else frozenset(a & b))

    def either(self, a: frozenset[str] | None, b: frozenset[str]) -> frozenset[str]:
        if a is None or a is b:
            return b
        return self._cached("|", (a, b), lambda: a if b <= a else frozenset(a | b))

    def minus(self, a: frozenset[str], b: frozenset[str]) -> frozenset[str]:
        return self._cached("-", (a, b), lambda: frozenset(a - b))


def analyze(program: Program, exports: Iterable[Export] | None = None) -> Analysis:
    exports = list(program.runnable_exports if exports is None else exports)
    order: list[Node] = []
    seen: set[int] = set()
    for ex in exports:
        for n in ex.node.walk():  # inputs before users
            if n.id not in seen:
                seen.add(n.id)
                order.append(n)
    sets = _Sets()
    visited: dict[int, frozenset[str]] = {}

    def visit(node: Node, keys: frozenset[str]) -> None:
        if keys:
            visited[node.id] = sets.either(visited.get(node.id), keys)

    for ex in exports:
        visit(ex.node, sets.floats(ex.node.keys))
    notes: dict[tuple, Coverage] = {}
    sparse = _sparse_deltas(order)
    for n in order:
        if n.op == "adapter":
            notes[("adapter", n.id, "")] = Coverage("adapter", n.op, n.origin, describe_adapter(program, n),
                                                     list(n.keys))

    def note(kind: str, node: Node, source: str, keys: Iterable[str]) -> None:
        c = notes.get((kind, node.id, source))
        if c is None:
            c = notes[(kind, node.id, source)] = Coverage(kind, node.op, node.origin, source)
        c.keys.extend(keys)

    for n in order:  # keys of secondary inputs a node leaves out, in graph order
        if n.load is not None:
            continue
        spaces = [a.space for a in n.args]
        for i, k in left_out(n.op, spaces, [a.keys for a in n.args], n.keys):
            other = n.args[i]
            clash = any(k in a.keys and a.keys[k].shape != other.keys[k].shape for a in n.args)
            note("mismatched" if clash else "left_out", n, node_name(program, other), [k])

    missing: dict[tuple[int, str], tuple[Span | None, list[str]]] = {}
    for n in reversed(order):  # users before their inputs
        got = visited.pop(n.id, None)
        if got is None or n.load is not None:
            continue
        ks = sets.both(got, sets.floats(n.keys))
        if not ks:
            continue
        args = n.args
        present = [sets.names(a.keys) for a in args]
        if n.op in ("select", "scale"):
            visit(args[0], ks)
            computed = ks
        elif n.op == "fallback":
            visit(args[0], sets.both(ks, present[0]))
            visit(args[1], sets.minus(ks, present[0]))
            computed = frozenset()
        elif n.op == "sub" or is_union(n.op, [a.space for a in args]):
            for a, p in zip(args, present):
                visit(a, sets.both(ks, p))
            computed = ks
        else:  # a merge method, or model + delta: computed where every input has the key
            first = primary(n.op, [a.space for a in args])
            computed = ks
            for i, p in enumerate(present):
                if i != first:
                    computed = sets.both(computed, p)
            visit(args[first], ks)
            for i, a in enumerate(args):
                if i != first:
                    visit(a, computed)
            # A sparse delta (an adapter, scaled or summed) updates some keys by design: the others
            # are not "kept", they are what it does not touch.
            quiet = n.op == "add" and all(sparse.get(a.id) for i, a in enumerate(args) if i != first)
            if computed is not ks and len(computed) != len(ks) and not quiet:
                kept = sets.minus(ks, computed)
                masked = frozenset().union(*(a.component.keys for i, a in enumerate(args)
                                             if i != first and isinstance(a.component, ShapeMask)))
                source = node_name(program, args[first])
                if masked & kept:  # --force: keys whose shapes differ, taken from the first input
                    note("forced", n, source, _in_order(kept & masked, n.keys))
                    kept = kept - masked
                if kept:
                    note("kept", n, source, _in_order(kept, n.keys))
        _check_maps(n, computed, missing)

    diags = []
    for (_, name), (span, keys) in missing.items():
        count = len(keys)
        diags.append(error(
            codes.NO_VALUE_FOR_KEY,
            f"`{name}` has no value for {count} key{'s' if count != 1 else ''} ({summarize_keys(keys)}): "
            "no rule matches them and the map has no `default`", span,
            help="add `default: VALUE` to the map"))
    total = sum(len(ex.node.keys) for ex in exports)
    return Analysis(list(notes.values()), diags, total)


def _sparse_deltas(order: list[Node]) -> dict[int, bool]:
    """Nodes whose value is an adapter's delta (scaled, selected, summed with others, or merged by a
    delta method whose first input is one): inputs come before users in `order`."""
    sparse: dict[int, bool] = {}
    for n in order:
        if n.op == "adapter":
            sparse[n.id] = True
        elif n.space == "delta" and n.args:
            if n.op in ("add", "fallback"):
                sparse[n.id] = any(sparse.get(a.id) for a in n.args)
            else:
                sparse[n.id] = bool(sparse.get(n.args[0].id))
    return sparse


def describe_adapter(program: Program, n: Node) -> str:
    """One line on what an adapter file updates: dialect, kinds, ranks, modules and keys."""
    amap = n.load.adapter
    kinds = "/".join("LoRA" if k == "lora" else k for k in amap.kinds)
    ranks = amap.ranks
    rank = ("rank " + str(ranks[0]) if len(ranks) == 1 else f"ranks {ranks[0]}–{ranks[-1]}") if ranks else ""
    modules = len({p.module for _, ps in amap.targets for p in ps})
    keys = [k for k, _ in amap.targets]
    return (f"`{node_name(program, n)}` is a {amap.dialect} {kinds} adapter{' (' + rank + ')' if rank else ''}: "
            f"{modules} module{'s update' if modules != 1 else ' updates'} {len(keys)} key{'s' if len(keys) != 1 else ''} "
            f"of {n.arch.name} ({summarize_keys(keys)})")


def _in_order(keys: frozenset[str], order: dict[str, KeyMeta]) -> list[str]:
    return [k for k in order if k in keys]


def _check_maps(n: Node, computed: frozenset[str], missing: dict) -> None:
    """Keys a node computes for which one of its hyperparameter maps gives no value (and the
    hyperparameter has no default of its own)."""
    if not computed or not n.hypers:
        return
    spec = REGISTRY.get(n.op) if n.op != "scale" else None
    for name, bound in n.hypers:
        if bound.is_scalar:
            continue
        hp = spec.hyper(name) if spec is not None else None
        if hp is not None and not hp.required:
            continue  # a key no rule matches gets the method's own default
        rules = list(bound.rules)
        lacking = [k for k in n.keys if k in computed and resolve_rules(rules, n.arch.classify(k), n.arch) is None]
        if lacking:
            missing.setdefault((n.id, name), (bound.span, []))[1].extend(lacking)
