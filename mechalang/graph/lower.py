"""Lowering: the recipe graph becomes the key plan the backend executes.

For each export and each of its keys, a `KeyExpr` says what to read and compute, with every
hyperparameter resolved to a scalar for that key. Output headers (names, dtypes, shapes, offsets)
come out exact. Which keys a node has and where each comes from is decided by graph/keys.py, the
same rules the checker used to build each node's key set; the keys a merge kept from its first
input or left out are reported (`Coverage`), and `--strict` makes them errors.
"""

from __future__ import annotations

import fnmatch
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable

from ..diagnostics import Diagnostic, Span, codes, error
from ..dtypes import EXPORT_DTYPES, FLOAT_DTYPES
from ..methods.registry import REGISTRY
from ..runtime.plan import InputFile, KeyExpr, Op, OutputPlan, Plan, Read, layout
from .keys import key_source, left_out
from .nodes import BoundHyper, Node


@dataclass
class Coverage:
    """Keys a merge could not treat like the others, for the summary and for --strict."""

    kind: str  # "kept" (taken unchanged from the first input) | "left_out" | "mismatched"
    op: str
    origin: Span | None
    source: str  # the input they were kept from / only present in
    keys: list[str] = field(default_factory=list)

    def describe(self) -> str:
        n = len(self.keys)
        where = f" at {self.origin.file}:{self.origin.line}" if self.origin else ""
        pattern = summarize_keys(self.keys)
        if self.kind == "kept":
            return f"{n} key{'s' if n != 1 else ''} kept unchanged from `{self.source}` in `{self.op}`{where}: {pattern}"
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
class HyperTrace:
    name: str
    value: Any
    source: str  # "rule" | "default rule" | "scalar" | "method default"
    span: Span | None


@dataclass
class Lowered:
    plan: Plan
    coverage: list[Coverage]
    diagnostics: list[Diagnostic]
    names: dict[int, str]  # input index -> name
    exports: list[Any]  # check.evaluate.ExportResult, in plan order
    lowerer: "Lowerer"  # for explain: node names and hyperparameter traces


class Lowerer:
    def __init__(self, program, *, precision: str = "fp32", output_paths: list[str] | None = None,
                 metadata: Callable[[Any, str], dict[str, str]] | None = None, trace: bool = False):
        self.program = program
        self.precision = precision
        self.output_paths = output_paths
        self.metadata = metadata or (lambda export, path: {})  # (export, the path written)
        self.inputs: list[InputFile] = []
        self.input_index: dict[int, int] = {}
        self.names: dict[int, str] = {}
        self.diags: list[Diagnostic] = []
        self.coverage: dict[tuple, Coverage] = {}
        self._noted: set[tuple] = set()
        self._file_keys: dict[int, dict[str, str]] = {}
        self.trace = trace
        self.traces: dict[tuple[int, str], list[HyperTrace]] = {}
        self._no_value: dict[tuple[int, str], tuple[Span | None, list[str]]] = {}  # keys a map misses

    # -------------------------------------------------------------- names

    def node_name(self, n: Node) -> str:
        if n.op == "load":
            return self.program.model_names.get(n.load.path, n.load.name)
        if n.origin is not None:
            return f"{n.op} at line {n.origin.line}"
        return n.op

    # -------------------------------------------------------------- entry

    def lower(self) -> Lowered:
        outputs = []
        exports = [e for e in self.program.exports if e.node is not None and e.path is not None]
        for i, ex in enumerate(exports):
            for n in ex.node.walk():
                if n.op == "load" and n.id not in self.input_index:
                    h = n.load.header
                    self.input_index[n.id] = len(self.inputs)
                    self.names[len(self.inputs)] = self.node_name(n)
                    self.inputs.append(InputFile(n.load.path, h.data_start, h.size, self.node_name(n)))
                self._left_out(n)
            path = self.output_paths[i] if self.output_paths else str(ex.path)
            outputs.append(self._output(ex, path))
        for (_, name), (span, keys) in self._no_value.items():
            n = len(keys)
            self.diags.append(error(
                codes.NO_VALUE_FOR_KEY,
                f"`{name}` has no value for {n} key{'s' if n != 1 else ''} ({summarize_keys(keys)}): "
                "no rule matches them and the map has no `default`", span,
                help="add `default: VALUE` to the map"))
        plan = Plan(tuple(self.inputs), tuple(outputs), self.precision)
        return Lowered(plan, list(self.coverage.values()), self.diags, self.names, exports, self)

    def _output(self, ex, path: str) -> OutputPlan:
        root: Node = ex.node
        entries = []
        memo: dict[tuple[int, str], KeyExpr | None] = {}
        for key, meta in root.keys.items():
            expr = self.expr(root, key, memo)
            if expr is None:
                continue
            dtype = meta.dtype
            if ex.dtype is not None and dtype in FLOAT_DTYPES:
                dtype = EXPORT_DTYPES[ex.dtype]
            entries.append((key, expr, dtype, meta.shape))
        return OutputPlan(path, layout(entries), tuple(sorted(self.metadata(ex, path).items())))

    # -------------------------------------------------------------- per key

    def expr(self, node: Node, key: str, memo: dict) -> KeyExpr | None:
        mk = (node.id, key)
        if mk in memo:
            return memo[mk]
        memo[mk] = result = self._expr(node, key, memo)
        return result

    def first_source(self, node: Node, key: str) -> KeyExpr | None:
        """The tensor `key` as the first input that has it holds it (for non-float keys)."""
        n = node
        while n.op != "load":
            nxt = next((a for a in n.args if key in a.keys), None)
            if nxt is None:
                return None
            n = nxt
        return self._read(n, key)

    def _read(self, n: Node, key: str) -> Read | None:
        names = self._file_keys.get(n.id)
        if names is None:
            names = self._file_keys[n.id] = dict(n.load.file_keys)
        file_key = names.get(key, key)
        meta = n.load.header.tensors.get(file_key)
        if meta is None:
            return None
        return Read(self.input_index[n.id], file_key, meta.dtype, tuple(meta.shape), meta.begin, meta.end)

    def _expr(self, node: Node, key: str, memo: dict) -> KeyExpr | None:
        meta = node.keys.get(key)
        if meta is None:
            return None
        if node.op == "load":
            return self._read(node, key)
        if meta.dtype not in FLOAT_DTYPES:
            return self.first_source(node, key)
        args = [self.expr(a, key, memo) for a in node.args]
        src = key_source(node.op, [a.space for a in node.args], [a is not None for a in args])
        if src is None:
            return None
        if not src.compute:
            if src.kept:
                self._note("kept", node, self.node_name(node.args[src.arg]), key)
            return args[src.arg]
        op = node.op
        if op == "scale":
            factor = self.resolve(node, "factor", node.hyper("factor"), key, None)
            if factor == 1:
                return args[0]
            return Op("scale", (args[0],), (("factor", float(factor)),), node.origin)
        if op in ("add", "sub"):
            return Op(op, tuple(args), (), node.origin)
        spec = REGISTRY.get(op)  # a registered merge method
        hypers = []
        for hp in spec.hypers:
            value = self.resolve(node, hp.name, node.hyper(hp.name), key, hp)
            hypers.append((hp.arg, value))
        return Op(op, tuple(args), tuple(hypers), node.origin)

    def resolve(self, node: Node, name: str, bound: BoundHyper | None, key: str, hp) -> Any:
        trace = None
        if bound is None:
            value = hp.default if hp is not None else 1.0
            trace = HyperTrace(name, value, "method default", None)
        elif bound.is_scalar:
            value = bound.scalar
            trace = HyperTrace(name, value, "scalar", bound.span)
        else:
            from ..archs.selectors import resolve as resolve_rules

            info = node.arch.classify(key)
            found = resolve_rules(list(bound.rules), info, node.arch)
            if found is None:
                if hp is None or hp.required:
                    self._no_value.setdefault((node.id, name), (bound.span, []))[1].append(key)
                    value = 0.0
                else:
                    value = hp.default
                trace = HyperTrace(name, value, "method default", None)
            else:
                value, idx = found
                rule = bound.rules[idx]
                from ..syntax import ast as _ast

                kind = "default rule" if isinstance(rule.selector, _ast.SelDefault) else "rule"
                trace = HyperTrace(name, value, kind, rule.span)
        if hp is not None and hp.kind.type == "float" and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if self.trace:
            self.traces.setdefault((node.id, key), []).append(trace)
        return value

    # -------------------------------------------------------------- coverage

    def _note(self, kind: str, node: Node, source: str, key: str) -> None:
        ck = (kind, node.id, source)
        c = self.coverage.get(ck)
        if c is None:
            c = self.coverage[ck] = Coverage(kind, node.op, node.origin, source)
        if (ck, key) not in self._noted:
            self._noted.add((ck, key))
            c.keys.append(key)

    def _left_out(self, node: Node) -> None:
        if node.op == "load":
            return
        inputs = [a.keys for a in node.args]
        for i, k in left_out(node.op, [a.space for a in node.args], inputs, node.keys):
            other = node.args[i]
            shape_clash = any(k in a.keys and a.keys[k].shape != other.keys[k].shape for a in node.args)
            self._note("mismatched" if shape_clash else "left_out", node, self.node_name(other), k)


def filter_keys(plan: Plan, pattern: str | None) -> list[tuple[OutputPlan, Any]]:
    rows = []
    for out in plan.outputs:
        for t in out.tensors:
            if pattern is None or fnmatch.fnmatchcase(t.key, pattern):
                rows.append((out, t))
    return rows
