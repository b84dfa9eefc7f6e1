"""Lowering: the recipe graph becomes the key plan the backend executes.

For each export and each of its keys, a `KeyExpr` says what to read and compute, with every
hyperparameter resolved to a scalar for that key. Output headers (names, dtypes, shapes, offsets)
come out exact. Which keys a node has and where each comes from is decided by graph/keys.py, the
same rules the checker used to build each node's key set (and graph/coverage.py used to report
what is kept, left out or missing, before lowering). Lowering is iterative: a chain of 10,000
merges lowers without deep recursion.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Any, Callable

from ..dtypes import EXPORT_DTYPES, FLOAT_DTYPES
from ..methods.registry import REGISTRY
from ..runtime.plan import InputFile, KeyExpr, Op, OutputPlan, Plan, layout
from ..syntax import ast
from .coverage import node_name
from .keys import key_source
from .nodes import BoundHyper, Node
from .source_reads import input_files, source_expr


@dataclass
class HyperTrace:
    name: str
    value: Any
    source: str  # "rule" | "default rule" | "scalar" | "method default"
    span: Any


@dataclass
class Lowered:
    plan: Plan
    names: dict[int, str]  # input index -> name
    exports: list[Any]  # graph.program.Export of each output, in plan order
    lowerer: "Lowerer"  # for explain: node names and hyperparameter traces


class Lowerer:
    def __init__(self, program, *, precision: str = "fp32", output_paths: list[str] | None = None,
                 metadata: Callable[[Any, str], dict[str, str]] | None = None, trace: bool = False,
                 shard_size: int | None = None):
        self.program = program
        self.shard_size = shard_size  # `--shard-size` for `as hf` exports that do not say
        self.precision = precision
        self.output_paths = output_paths
        self.metadata = metadata or (lambda export, path: {})  # (export, the path written)
        self.inputs: list[InputFile] = []
        self.input_index: dict[int, int] = {}
        self.names: dict[int, str] = {}
        self._file_keys: dict[int, dict[str, str]] = {}
        self.trace = trace
        self.traces: dict[tuple[int, str], list[HyperTrace]] = {}
        self.left_out_of_lora: dict[int, list[str]] = {}  # export index -> keys with no low-rank form
        self.left_out_of_diffusers: dict[int, list[str]] = {}  # export index -> keys with no place
        self.export_paths: dict[int, str] = {}  # export index -> the file or folder it writes

    def node_name(self, n: Node) -> str:
        return node_name(self.program, n)

    # -------------------------------------------------------------- entry

    def lower(self) -> Lowered:
        outputs = []
        folders = []
        per_output = []  # the export of each output, in plan order
        exports = self.program.runnable_exports
        for i, ex in enumerate(exports):
            for n in ex.node.walk():
                if n.load is not None and n.id not in self.input_index:
                    self.input_index[n.id] = len(self.inputs)
                    for f in input_files(n.load.header, self.node_name(n)):
                        self.names[len(self.inputs)] = f.name
                        self.inputs.append(f)
            path = self.output_paths[i] if self.output_paths else str(ex.path)
            self.export_paths[i] = path
            from .diffusers_export import DiffusersFormat
            from .hf_export import HfFormat

            if isinstance(ex.format, DiffusersFormat):
                from .diffusers_export import plan_output as plan_folder

                files, folder, self.left_out_of_diffusers[i] = plan_folder(self, ex, path)
                outputs += files
                per_output += [ex] * len(files)
                folders.append(folder)
                continue
            if isinstance(ex.format, HfFormat):
                from .hf_export import plan_hf

                shards, folder = plan_hf(self, ex, path, ex.format, self.shard_size)
                outputs.extend(shards)
                per_output += [ex] * len(shards)
                folders.append(folder)
                continue
            if ex.format is not None:
                from .lora_export import plan_output

                out, self.left_out_of_lora[i] = plan_output(self, ex, path, ex.format)
                outputs.append(out)
            else:
                outputs.append(self._output(ex, path))
            per_output.append(ex)
        plan = Plan(tuple(self.inputs), tuple(outputs), self.precision, tuple(folders))
        return Lowered(plan, self.names, per_output, self)

    def _output(self, ex, path: str) -> OutputPlan:
        return OutputPlan(path, layout(self.entries(ex)), tuple(sorted(self.metadata(ex, path).items())))

    def entries(self, ex, dtype: str | None = None) -> list[tuple]:
        """(key, expr, dtype written, shape) of every key an export writes, in key order. `dtype`
        (an `as` name) overrides the export's own."""
        root: Node = ex.node
        entries = []
        memo: dict[tuple[int, str], KeyExpr | None] = {}
        as_dtype = dtype or ex.dtype
        for key, meta in root.keys.items():
            expr = self.expr(root, key, memo)
            if expr is None:
                continue
            entries.append((key, expr, self.out_dtype(ex, key, meta.dtype, as_dtype), meta.shape))
        return entries

    def out_dtype(self, ex, key: str, dtype: str, as_dtype: str | None) -> str:
        """The dtype an export writes `key` in: `as_dtype` (one name) for every float key, else the
        export's per-key map (`as {vae: fp32, default: fp16}`, `as hf(dtype={...})`), else `dtype`,
        the key's own. Integer tensors always keep theirs."""
        if dtype not in FLOAT_DTYPES:
            return dtype
        if as_dtype is not None:
            return EXPORT_DTYPES[as_dtype]
        if getattr(ex, "dtypes", None) is not None:
            chosen = self.resolve(ex.node, "dtype", ex.dtypes, key, None)
            if isinstance(chosen, str):  # no rule for this key: its own dtype
                return EXPORT_DTYPES[chosen]
        return dtype

    # -------------------------------------------------------------- per key

    def expr(self, node: Node, key: str, memo: dict) -> KeyExpr | None:
        """The expression of `key` at `node`, its inputs' first (an explicit stack, no recursion)."""
        stack = [(node, False)]
        while stack:
            n, inputs_done = stack.pop()
            mk = (n.id, key)
            if mk in memo:
                continue
            if not inputs_done and self._computed_here(n, key):
                stack.append((n, True))
                stack.extend((a, False) for a in reversed(n.args) if (a.id, key) not in memo)
                continue
            memo[mk] = self._expr(n, key, memo)
        return memo[(node.id, key)]

    @staticmethod
    def _computed_here(n: Node, key: str) -> bool:
        meta = n.keys.get(key)
        return meta is not None and n.load is None and meta.dtype in FLOAT_DTYPES

    def first_source(self, node: Node, key: str) -> KeyExpr | None:
        """The tensor `key` as the first input that has it holds it (for non-float keys)."""
        n = node
        while n.op != "load":
            nxt = next((a for a in n.args if key in a.keys), None)
            if nxt is None:
                return None
            n = nxt
        return self._read(n, key)

    def _read(self, n: Node, key: str) -> KeyExpr | None:
        names = self._file_keys.get(n.id)
        if names is None:
            names = self._file_keys[n.id] = dict(n.load.file_keys)
        file_key = names.get(key, key)
        t = n.load.header.tensors.get(file_key)
        if t is None:
            return None
        return source_expr(self.input_index[n.id], t)

    def _adapter(self, n: Node, key: str, memo: dict) -> KeyExpr | None:
        """An adapter's delta for `key`: its groups' tensors read, turned into a delta by their
        kinds' formulas (kinds/apply.py), with the base weight as the last argument for kinds that
        need it."""
        from ..kinds.apply import OP, plan_hypers

        pieces = n.load.adapter.pieces(key)
        if not pieces:
            return None
        tensors = n.load.header.tensors
        idx = self.input_index[n.id]
        args: list[KeyExpr] = []
        for p in pieces:
            for _, name in p.parts:
                args.append(source_expr(idx, tensors[name]))
        base = bool(n.args)
        if base:
            base_expr = self.expr(n.args[0], key, memo)
            if base_expr is None:
                return None
            args.append(base_expr)
        return Op(OP, tuple(args), plan_hypers(key, pieces, n.keys[key].shape, base), n.origin)

    def _expr(self, node: Node, key: str, memo: dict) -> KeyExpr | None:
        meta = node.keys.get(key)
        if meta is None:
            return None
        if node.op == "load":
            return self._read(node, key)
        if node.op == "adapter":
            return self._adapter(node, key, memo)
        if meta.dtype not in FLOAT_DTYPES:
            return self.first_source(node, key)
        args = [memo.get((a.id, key)) for a in node.args]
        src = key_source(node.op, [a.space for a in node.args], [a is not None for a in args])
        if src is None:
            return None
        if not src.compute:
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
        """A hyperparameter's value for one key (a map's missing values were reported by
        graph/coverage.py before lowering)."""
        if bound is None:
            value = hp.default if hp is not None else 1.0
            trace = HyperTrace(name, value, "method default", None)
        elif bound.is_scalar:
            value = bound.scalar
            trace = HyperTrace(name, value, "scalar", bound.span)
        else:
            from ..archs.selectors import resolve as resolve_rules

            found = resolve_rules(list(bound.rules), node.arch.classify(key), node.arch)
            if found is None:
                value = hp.default if hp is not None and not hp.required else 0.0
                trace = HyperTrace(name, value, "method default", None)
            else:
                value, idx = found
                rule = bound.rules[idx]
                kind = "default rule" if isinstance(rule.selector, ast.SelDefault) else "rule"
                trace = HyperTrace(name, value, kind, rule.span)
        if hp is not None and hp.kind.type == "float" and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if self.trace:
            self.traces.setdefault((node.id, key), []).append(trace)
        return value


def filter_keys(plan: Plan, pattern: str | None) -> list[tuple[OutputPlan, Any]]:
    rows = []
    for out in plan.outputs:
        for t in out.tensors:
            if pattern is None or fnmatch.fnmatchcase(t.key, pattern):
                rows.append((out, t))
    return rows
