"""The checker proper: evaluates a recipe into a recipe graph, typing everything on the way.

Evaluation is symbolic: models are graph nodes built from the files' headers, never tensors.
Templates are inlined at their call sites; imported modules are evaluated once. Every problem
becomes a `Diagnostic` and evaluation goes on with a `POISON` value, so one run reports every
error of a recipe. Errors inside a template carry the call site as a secondary label.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..diagnostics import Diagnostic, Label, Span, codes, did_you_mean, error, warning
from ..graph.nodes import GraphBuilder, HyperRule, Node
from ..graph.program import Export, Program
from ..modules import ModuleLoader, SourceModule
from ..paths import is_dir, path_problem
from ..syntax import ast
from .names import NameChecker
from .provenance import ParamSource, PathStorer, stored_recipe_text
from .values import (
    POISON,
    UNRESOLVED,
    Builtin,
    Closure,
    Env,
    HyperValue,
    ListValue,
    MethodValue,
    ModelValue,
    Namespace,
    a_type,
    is_number,
    type_name,
)


def folder_dtype_map(stmt: ast.Export) -> ast.HyperMap | None:
    """`as hf(dtype={vae: fp32, default: fp16})` / `as diffusers(dtype={...})`: the per-key dtype map
    given to a folder format, checked and lowered like `as {...}` (the format's own check skips it)."""
    if stmt.dtype not in ("hf", "diffusers") or stmt.format is None:
        return None
    for kw in stmt.format.kwargs:
        if kw.name == "dtype" and isinstance(kw.value, ast.HyperMap):
            return kw.value
    return None


@dataclass
class Options:
    models_dirs: list[Path] = field(default_factory=list)
    sets: dict[str, str] = field(default_factory=dict)
    force: bool = False  # merge differing architectures over their shared keys (mecha merge --force)
    # Model files that are not found are checked later (the Python API builds recipes before it is
    # told the models folder): their nodes have the UNRESOLVED architecture and no keys.
    defer_missing_models: bool = False
    # A main recipe without an `export` is reported (a warning: it may be a library of `def`s);
    # the REPL and the Python API evaluate values without exports and turn this off.
    expect_exports: bool = True
    # Adapter tensors that map to no key of the base are a warning instead of an error.
    allow_unused: bool = False


# Limits on what evaluation builds, each reported as a diagnostic when exceeded.
TORCH_SUFFIXES = (".bin", ".ckpt", ".pt", ".pth")
OUTPUT_FILE_SUFFIXES = (".safetensors", ".sft") + TORCH_SUFFIXES


def is_folder_format(fmt: Any) -> bool:
    """Whether an export format writes a folder (`as hf`, `as diffusers`)."""
    from ..graph.diffusers_export import DiffusersFormat
    from ..graph.hf_export import HfFormat

    return isinstance(fmt, (HfFormat, DiffusersFormat))


MAX_ITEMS = 100_000  # elements of a list, rules of a map
MAX_STRING = 1_000_000  # characters of a string built with `+`
MAX_TEMPLATE_DEPTH = 10_000  # templates calling templates
MAX_TEMPLATE_CALLS = 100_000  # template calls in all
MAX_NODES = 1_000_000  # distinct nodes of the recipe graph


class Evaluator:
    def __init__(self, options: Options | None = None, loader: ModuleLoader | None = None):
        self.options = options or Options()
        self.loader = loader or ModuleLoader()
        self.sources = self.loader.sources
        self.builder = GraphBuilder()
        self.diags: list[Diagnostic] = []
        self._seen_diags: set = set()
        self.call_stack: list[tuple[Span | None, str]] = []
        self.module_envs: dict[Path, Env | None] = {}
        self.loading: list[Path] = []
        self.current_module: list[Path | None] = []
        self.param_values: list[dict[str, tuple[Any, Span | None]]] = []  # `recipe(path, p=...)`
        self.template_calls = 0  # evaluation budget (MAX_TEMPLATE_CALLS)
        self.budget_spent = False
        self.model_names: dict[str, str] = {}
        self.params: dict[str, Any] = {}
        self.param_files: dict[str, Path] = {}  # main params given as recipe files (--set a=x.mecha)
        self._groups = 0
        self.active_defs: list[ast.Def] = []
        from . import builtins as _builtins

        self.builtins = _builtins

    # ------------------------------------------------------------------ diagnostics

    def report(self, d: Diagnostic) -> None:
        for call_span, name in reversed(self.call_stack):
            if call_span is not None:
                d = d.with_secondary(Label(call_span, f"in this call to `{name}`"))
        key = (d.code, d.message, d.span, d.secondary)
        if key in self._seen_diags:
            return
        self._seen_diags.add(key)
        self.diags.append(d)

    def too_large(self, what: str, span: Span | None) -> Any:
        return self.err(codes.VALUE_TOO_LARGE, f"{what}: larger than the checker builds", span,
                        help="a value that doubles on every line grows past any limit; build it "
                             "from what it needs")

    def err(self, code, message: str, span: Span | None, **kw) -> Any:
        self.report(error(code, message, span, **kw))
        return POISON

    # ------------------------------------------------------------------ modules

    def run_main(self, path: Path, text: str | None = None, display: str | None = None) -> Program:
        if text is None:
            mod, diags = self.loader.load_file(path)
        else:
            from ..syntax.parser import parse

            disp = display or str(path)
            self.sources.add(disp, text)
            tree, diags = parse(text, disp)
            mod = SourceModule(path, disp, text, tree)
        for d in diags:
            self.report(d)
        exports: list[Export] = []
        if mod is not None and mod.tree is not None:
            env = self.eval_module(mod, main=True, exports=exports)
            if env is not None:
                unknown = set(self.options.sets) - set(self.params)
                for name in sorted(unknown):
                    sugg = did_you_mean(name, list(self.params))
                    self.err(codes.UNKNOWN_PARAM, f"--set {name}: the recipe has no param `{name}`", None,
                             help=f"did you mean `{sugg}`?" if sugg else
                             (f"its params are: {', '.join(self.params)}" if self.params else "it declares no param"))
        self._check_exports(exports)
        if (self.options.expect_exports and mod is not None and mod.tree is not None
                and not any(isinstance(s, ast.Export) for s in mod.tree.statements)):
            self.report(warning(codes.NO_EXPORT, "the recipe has no `export`: running it writes nothing",
                                Span.point(mod.display, 1, 1),
                                help='add `export VALUE to "out.safetensors"` (a library of `def`s '
                                     'that other recipes import needs none)'))
        program = Program(mod, exports, self.diags, self.sources, self.params, self.builder, self.model_names)
        env = self.module_envs.get(mod.path) if mod is not None else None
        if env is not None:
            program.names = dict(env.values)
        if mod is not None and mod.tree is not None and program.ok:
            tree, params = mod.tree, dict(self.params)
            storer = PathStorer(mod.path.parent, self.options.models_dirs)
            sources = {k: ParamSource(p) for k, p in self.param_files.items()}
            program.recipe_printer = lambda outputs: stored_recipe_text(tree, params, storer, outputs, sources)
            program.param_files = dict(self.param_files)
        return program

    def eval_module(self, mod: SourceModule, *, main: bool, exports: list[Export] | None = None,
                    param_values: dict[str, tuple[Any, Span | None]] | None = None) -> Env | None:
        """Evaluate a module once (cached), or, with `param_values` (`recipe(path, p=...)`), afresh
        with those params set."""
        if not param_values and mod.path in self.module_envs:
            return self.module_envs[mod.path]
        assert mod.tree is not None
        names = NameChecker(self.builtins.builtin_names())
        for d in names.check_module(mod.tree):
            self.report(d)
        env = Env()
        if not param_values:
            self.module_envs[mod.path] = env
        self.loading.append(mod.path)
        self.current_module.append(mod.path)
        self.param_values.append(param_values or {})
        saved_stack, self.call_stack = self.call_stack, []
        try:
            # Templates may be called above their `def` (the name checker allows it, and checks
            # that what they use is bound by then), so they are bound first.
            for stmt in mod.tree.statements:
                if isinstance(stmt, ast.Def):
                    self.statement(stmt, env, mod, main, exports)
            for stmt in mod.tree.statements:
                if not isinstance(stmt, ast.Def):
                    self.statement(stmt, env, mod, main, exports)
        finally:
            self.call_stack = saved_stack
            self.param_values.pop()
            self.current_module.pop()
            self.loading.pop()
        return env

    def import_module(self, spec: str, span: Span | None, importer: SourceModule) -> Env | None:
        path, diags = self.loader.resolve(spec, importer.path, span)
        for d in diags:
            self.report(d)
        if path is None:
            return None
        if path in self.loading:
            chain = self.loading[self.loading.index(path):] + [path]
            shown = " → ".join(self._short(p) for p in chain)
            self.err(codes.IMPORT_CYCLE, f"import cycle: {shown}", span, label="this import closes the cycle",
                     help="move what both files need into a third module")
            return None
        mod, diags = self.loader.load_file(path, span)
        for d in diags:
            self.report(d)
        if mod is None or mod.tree is None:
            return None
        return self.eval_module(mod, main=False)

    @staticmethod
    def _short(p: Path) -> str:
        from ..modules import display_name

        return display_name(p)

    # ------------------------------------------------------------------ statements

    def bind(self, env: Env, name: str, value: Any) -> None:
        if name not in env.values:  # rebinding is reported by the name checker; the first wins
            env.values[name] = value
            if isinstance(value, ModelValue) and value.node.load is not None:
                self.model_names.setdefault(value.node.load.path, name)

    def statement(self, stmt: ast.Stmt, env: Env, mod: SourceModule, main: bool,
                  exports: list[Export] | None) -> None:
        if isinstance(stmt, ast.Import):
            menv = self.import_module(stmt.path, stmt.span, mod)
            self.bind(env, stmt.alias, Namespace(stmt.alias, menv, mod.path) if menv is not None else POISON)
        elif isinstance(stmt, ast.FromImport):
            menv = self.import_module(stmt.path, stmt.span, mod)
            for n in stmt.names:
                if menv is None:
                    self.bind(env, n.bound, POISON)
                    continue
                self.bind(env, n.bound, self.module_member(menv, n.name, stmt.path, n.span))
        elif isinstance(stmt, ast.Param):
            self.bind(env, stmt.name, self.builtins.param_value(self, stmt, env, mod, main))
        elif isinstance(stmt, ast.Let):
            value = self.eval(stmt.value, env)
            if stmt.type is not None:
                from .annotations import check_annotation

                value = check_annotation(self, stmt.type, value, stmt.value.span, f"`{stmt.name}`")
            self.bind(env, stmt.name, value)
        elif isinstance(stmt, ast.Def):
            self.bind(env, stmt.name, Closure(stmt, env, mod.path))
        elif isinstance(stmt, ast.Export):
            if not main:
                return  # exports of imported modules do not run
            self.export(stmt, env, mod, exports)

    def module_member(self, menv: Env, name: str, spec: str, span: Span | None) -> Any:
        if name.startswith("_"):
            return self.err(codes.PRIVATE_NAME, f"`{name}` is private to `{spec}`", span,
                            help="names starting with `_` cannot be imported")
        if name not in menv.values:
            sugg = did_you_mean(name, [n for n in menv.values if not n.startswith("_")])
            return self.err(codes.NO_SUCH_MODULE_NAME, f"`{spec}` has no name `{name}`", span,
                            help=f"did you mean `{sugg}`?" if sugg else None)
        return menv.values[name]

    def export(self, stmt: ast.Export, env: Env, mod: SourceModule, exports: list[Export] | None) -> None:
        from ..dtypes import EXPORT_DTYPES

        value = self.eval(stmt.value, env)
        path_v = self.eval(stmt.path, env)
        node = None
        fmt = None
        if stmt.dtype == "lora":
            from .lora_format import lora_export

            node, fmt = lora_export(self, stmt, value, env)
        elif stmt.dtype == "diffusers":
            from .diffusers_format import diffusers_export

            node, fmt = diffusers_export(self, stmt, value, env)
        elif stmt.dtype == "hf":
            from .hf_format import hf_export

            node, fmt = hf_export(self, stmt, value, env)
        elif isinstance(value, ModelValue):
            if value.node.space != "weight":
                self.err(codes.EXPORT_NOT_MODEL, f"cannot export a {value.node.type_name}: an output file must be a Model",
                         stmt.value.span, label="this is a difference of models",
                         help="add it to a base model: `base + delta`")
            else:
                node = value.node
        elif value is not POISON and fmt is None:
            self.err(codes.EXPORT_NOT_MODEL, f"cannot export {a_type(value)}: an output file must be a Model",
                     stmt.value.span, label=f"this is {a_type(value)}")
        out_path = None
        if isinstance(path_v, str):
            if not path_v:
                self.err(codes.BAD_OUTPUT_PATH, "the output path is empty", stmt.path.span)
            else:
                folder = stmt.dtype if stmt.dtype in ("hf", "diffusers") else None
                out_path = self.output_path(path_v, mod, stmt.path.span, folder=folder)
        elif path_v is not POISON:
            self.err(codes.BAD_OUTPUT_PATH, f"an output path must be a string, found {type_name(path_v)}", stmt.path.span)
        dtype = stmt.dtype if stmt.dtype not in ("lora", "hf", "diffusers") else None
        if dtype is not None and dtype not in EXPORT_DTYPES:
            sugg = did_you_mean(dtype, list(EXPORT_DTYPES))
            self.err(codes.UNKNOWN_OUTPUT_DTYPE, f"unknown output dtype `{dtype}`", stmt.span,
                     help=f"did you mean `{sugg}`?" if sugg else f"use one of {', '.join(EXPORT_DTYPES)}")
            dtype = None
        dtypes = None
        per_key = stmt.dtypes if stmt.dtypes is not None else folder_dtype_map(stmt)
        if per_key is not None:
            dtypes = self.export_dtypes(per_key, node, env)
            if dtypes is None:
                node = None
        if exports is not None:
            exports.append(Export(node, out_path, dtype, stmt.span, stmt.path.span, fmt, dtypes))

    def export_dtypes(self, hmap: ast.HyperMap, node: Node | None, env: Env) -> Any:
        """`as {vae: fp32, default: fp16}`: the map's selectors checked against the exported model's
        architecture like a hyperparameter map's; its values are dtype names (`fp16` or "fp16")."""
        from dataclasses import replace

        from ..dtypes import EXPORT_DTYPES
        from ..methods.registry import HyperKind
        from .calls import bind_hyper

        entries = []
        for entry in hmap.entries:
            v = entry.value
            if isinstance(v, ast.Name):
                v = ast.String(v.id, span=v.span)
            if not isinstance(v, ast.String) or v.value not in EXPORT_DTYPES:
                shown = v.value if isinstance(v, ast.String) else "this value"
                sugg = did_you_mean(shown, list(EXPORT_DTYPES)) if isinstance(v, ast.String) else None
                self.err(codes.UNKNOWN_OUTPUT_DTYPE, f"unknown output dtype `{shown}`", entry.value.span,
                         help=f"did you mean `{sugg}`?" if sugg else f"use one of {', '.join(EXPORT_DTYPES)}")
                return None
            entries.append(replace(entry, value=v))
        value = self.e_HyperMap(replace(hmap, entries=tuple(entries)), env)
        if node is None:
            return None
        return bind_hyper(self, HyperKind("str", choices=tuple(EXPORT_DTYPES)), value, hmap.span, node.arch,
                          node.keys, "the output dtypes")

    def output_path(self, text: str, mod: SourceModule, span: Span | None, *,
                    folder: str | None = None) -> Path | None:
        """An export's file (or, with `folder`, the folder of `as hf` / `as diffusers`), absolute (relative paths
        start at the recipe's folder), or None (reported) when it cannot be one to write:
        everything `mecha run` would refuse about a path is refused here, before any tensor is
        read. The path must fit the format: a folder for `as hf`, a safetensors file otherwise."""
        problem = path_problem(text)
        if problem:
            self.err(codes.BAD_OUTPUT_PATH, f"the output path {problem}", span)
            return None
        p = Path(text).expanduser()
        out = (p if p.is_absolute() else mod.path.parent / p).resolve()
        lower = text.rstrip("/" + os.sep).lower()
        if folder:
            if lower.endswith(OUTPUT_FILE_SUFFIXES) or (out.exists() and not is_dir(out)):
                self.err(codes.OUTPUT_FORMAT_MISMATCH, f"`as {folder}` writes a folder, but `{text}` names a file",
                         span, label="a file", help=f'name a folder: "{Path(text).stem}/"')
                return None
            return out
        if lower.endswith(TORCH_SUFFIXES):
            self.err(codes.OUTPUT_FORMAT_MISMATCH, f"`{text}` names a pickled torch file; mechalang writes "
                                                   "safetensors only", span, label="not written",
                     help=f'write "{Path(text).with_suffix(".safetensors").as_posix()}", or a Hugging Face '
                          f'folder with `as hf`')
            return None
        if text.endswith(("/", os.sep)) or is_dir(out):
            self.err(codes.BAD_OUTPUT_PATH, f"the output path `{text}` is a folder: an output is a file", span,
                     help=f'name the file: "{text.rstrip("/" + os.sep) or "."}/merged.safetensors", or write '
                          f'a Hugging Face folder: `as hf`')
            return None
        return out

    def _check_exports(self, exports: list[Export]) -> None:
        seen: dict[Path, Export] = {}
        inputs = {Path(p).resolve() for p in self.model_names} | {
            Path(n.load.path).resolve() for n in self._all_loads()}
        for e in exports:
            if e.path is None:
                continue
            if e.path in inputs or (is_folder_format(e.format) and any(e.path in i.parents for i in inputs)):
                self.err(codes.OUTPUT_IS_INPUT, f"the output `{e.path.name}` is one of this recipe's inputs"
                         if e.path in inputs else f"the output folder `{e.path.name}` holds an input of this recipe",
                         e.path_span, label="would overwrite an input", help="write to another file")
            if e.path in seen:
                self.err(codes.DUPLICATE_OUTPUT, f"two exports write `{e.path.name}`", e.path_span,
                         label="second export here", secondary=[Label(seen[e.path].path_span, "first export here")]
                         if seen[e.path].path_span else [])
            seen[e.path] = e

    def _all_loads(self) -> list[Node]:
        return self.builder.file_nodes()

    # ------------------------------------------------------------------ expressions

    def eval(self, e: Any, env: Env) -> Any:
        method = getattr(self, "e_" + type(e).__name__, None)
        if method is None:  # pragma: no cover - the parser makes only known nodes
            return self.err(codes.INTERNAL_ERROR, f"cannot evaluate {type(e).__name__}", getattr(e, "span", None))
        return method(e, env)

    def e_Number(self, e: ast.Number, env: Env) -> Any:
        try:
            return e.value
        except (ValueError, OverflowError):
            return self.err(codes.NUMBER_NOT_REPRESENTABLE, f"`{e.text}` is not a number this tool can represent", e.span)

    def e_String(self, e: ast.String, env: Env) -> Any:
        return e.value

    def e_Bool(self, e: ast.Bool, env: Env) -> Any:
        return e.value

    def e_Name(self, e: ast.Name, env: Env) -> Any:
        try:
            return env.lookup(e.id)
        except KeyError:
            pass
        value = self.builtins.lookup_builtin(e.id)
        if value is not None:
            return value
        return POISON  # the name checker has reported it

    def e_Attribute(self, e: ast.Attribute, env: Env) -> Any:
        base = self.eval(e.value, env)
        if base is POISON:
            return POISON
        if isinstance(base, Namespace):
            if base.env is None:
                return POISON
            return self.module_member(base.env, e.attr, base.name, e.span)
        if isinstance(base, ModelValue):
            return self.builtins.select_component(self, base, e.attr, e.span)
        return self.err(codes.NO_MEMBER, f"{a_type(base)} has no member `{e.attr}`", e.span)

    def e_Index(self, e: ast.Index, env: Env) -> Any:
        base = self.eval(e.value, env)
        idx = self.eval(e.index, env)
        if base is POISON or idx is POISON:
            return POISON
        if not isinstance(base, ListValue):
            return self.err(codes.BAD_INDEX, f"cannot index {a_type(base)}", e.value.span,
                            help="only lists can be indexed: `models[0]`")
        if not isinstance(idx, int) or isinstance(idx, bool):
            return self.err(codes.BAD_INDEX, f"a list index must be an int, found {type_name(idx)}", e.index.span)
        if not -len(base.items) <= idx < len(base.items):
            return self.err(codes.INDEX_OUT_OF_RANGE, f"index {idx} is out of range for a list of {len(base.items)}", e.index.span)
        return base.items[idx]

    def e_ListExpr(self, e: ast.ListExpr, env: Env) -> Any:
        items: list[Any] = []
        for it in e.items:
            if isinstance(it, ast.Splat):
                v = self.eval(it.value, env)
                if isinstance(v, ListValue):
                    items.extend(v.items)
                elif v is not POISON:
                    self.err(codes.EXPECTED_LIST, f"`*` needs a list, found {type_name(v)}", it.span)
            else:
                items.append(self.eval(it, env))
            if len(items) > MAX_ITEMS:
                return self.too_large(f"a list of more than {MAX_ITEMS:,} items", e.span)
        return ListValue(tuple(items))

    def e_ListComp(self, e: ast.ListComp, env: Env) -> Any:
        it = self.eval(e.iterable, env)
        if it is POISON:
            return POISON
        if not isinstance(it, ListValue):
            return self.err(codes.EXPECTED_LIST, f"a comprehension iterates over a list, found {type_name(it)}", e.iterable.span)
        out = []
        for item in it.items:
            scope = env.child()
            scope.values[e.var] = item
            out.append(self.eval(e.element, scope))
        return ListValue(tuple(out))

    def e_UnaryOp(self, e: ast.UnaryOp, env: Env) -> Any:
        from .operators import negate

        return negate(self, self.eval(e.operand, env), e)

    def e_BinOp(self, e: ast.BinOp, env: Env) -> Any:
        from .operators import binary

        left = self.eval(e.left, env)
        right = self.eval(e.right, env)
        return binary(self, e, left, right)

    def e_Pipe(self, e: ast.Pipe, env: Env) -> Any:
        first = self.eval(e.value, env)
        return self.call(e.call, env, prepend=[(first, e.value.span)])

    def e_Call(self, e: ast.Call, env: Env) -> Any:
        return self.call(e, env)

    def new_group(self) -> int:
        self._groups += 1
        return self._groups

    def e_HyperMap(self, e: ast.HyperMap, env: Env) -> Any:
        rules = []
        group = self.new_group()
        for entry in e.entries:
            v = self.eval(entry.value, env)
            if v is POISON:
                continue
            if isinstance(v, bool) or is_number(v) or isinstance(v, str):
                rules.append(HyperRule(entry.selector, v, entry.span, group))
            else:
                self.err(codes.BAD_MAP_VALUE, f"a map value must be a number, bool or string, found {type_name(v)}",
                         entry.value.span)
        return HyperValue(((None, tuple(rules)),), e.span)

    def e_With(self, e: ast.With, env: Env) -> Any:
        base = self.eval(e.base, env)
        over = self.eval(e.overrides, env)
        if base is POISON or over is POISON:
            return POISON
        if is_number(base) or isinstance(base, bool):
            base = HyperValue(((None, (HyperRule(ast.SelDefault(), base, e.base.span, self.new_group()),)),),
                              e.base.span)
        if not isinstance(base, HyperValue):
            return self.err(codes.WITH_NEEDS_MAP, f"`with` adds rules to a hyperparameter map, found {type_name(base)}",
                            e.base.span)
        extra = over.variants[0][1]
        if sum(len(rules) + len(extra) for _, rules in base.variants) > MAX_ITEMS:
            return self.too_large(f"a hyperparameter map of more than {MAX_ITEMS:,} rules", e.span)
        return HyperValue(tuple((a, rules + extra) for a, rules in base.variants), e.span)

    # ------------------------------------------------------------------ calls

    def call(self, e: ast.Call, env: Env, prepend: list[tuple[Any, Span | None]] | None = None) -> Any:
        func = self.eval(e.func, env)
        args: list[tuple[Any, Span | None]] = list(prepend or [])
        for a in e.args:
            if isinstance(a, ast.Splat):
                v = self.eval(a.value, env)
                if isinstance(v, ListValue):
                    args.extend((item, a.span) for item in v.items)
                else:
                    if v is not POISON:
                        self.err(codes.EXPECTED_LIST, f"`*` needs a list, found {type_name(v)}", a.span)
                    args.append((POISON, a.span))
            else:
                args.append((self.eval(a, env), a.span))
        kwargs: dict[str, tuple[Any, Span | None]] = {}
        for k in e.kwargs:
            if k.name in kwargs:
                self.err(codes.ARGUMENT_TWICE, f"argument `{k.name}` is given twice", k.name_span or k.span)
                continue
            kwargs[k.name] = (self.eval(k.value, env), k.value.span)
        if func is POISON:
            return POISON
        if isinstance(func, MethodValue):
            from .calls import call_method

            return call_method(self, func.spec, e, args, kwargs)
        if isinstance(func, Builtin):
            return func.impl(self, e, args, kwargs)
        if isinstance(func, Closure):
            return self.call_template(func, e, args, kwargs)
        return self.err(codes.NOT_CALLABLE, f"{a_type(func)} cannot be called", e.func.span)

    def call_template(self, fn: Closure, e: ast.Call, args, kwargs) -> Any:
        d = fn.definition
        if any(active is d for active in self.active_defs):
            return POISON  # recursion: reported by the name checker (E0405)
        if len(self.active_defs) >= MAX_TEMPLATE_DEPTH:
            return self.err(codes.TEMPLATES_TOO_DEEP, f"templates call templates more than "
                                                      f"{MAX_TEMPLATE_DEPTH:,} levels deep here", e.span,
                            help="write a long chain with `let`s, which have no depth limit")
        self.template_calls += 1
        if self.template_calls > MAX_TEMPLATE_CALLS or len(self.builder) > MAX_NODES:
            if not self.budget_spent:
                self.budget_spent = True
                self.err(codes.EVALUATION_TOO_LONG,
                         f"evaluating the recipe takes more than {MAX_TEMPLATE_CALLS:,} template calls "
                         f"(or {MAX_NODES:,} graph nodes): it stops here", e.span,
                         help="a template that calls another twice per level doubles the work at each "
                              "level: bind the inner call once with `let`")
            return POISON
        self.active_defs.append(d)
        try:
            return self._call_template(fn, e, args, kwargs)
        finally:
            self.active_defs.pop()

    def _call_template(self, fn: Closure, e: ast.Call, args, kwargs) -> Any:
        d = fn.definition
        scope = fn.env.child()
        params = [p.name for p in d.params]
        if len(args) > len(params):
            return self.err(codes.TOO_MANY_ARGUMENTS, f"`{d.name}` takes {len(params)} argument{'s' if len(params) != 1 else ''}, "
                            f"{len(args)} given", e.span,
                            secondary=[Label(d.name_span or d.span, "defined here")] if (d.name_span or d.span) else [])
        for (v, _), p in zip(args, d.params):
            scope.values[p.name] = v
        for name, (v, span) in kwargs.items():
            if name not in params:
                sugg = did_you_mean(name, params)
                self.err(codes.NO_SUCH_PARAMETER, f"`{d.name}` has no parameter `{name}`", span,
                         help=f"did you mean `{sugg}`?" if sugg else f"its parameters are: {', '.join(params)}")
                continue
            if name in scope.values:
                self.err(codes.ARGUMENT_TWICE, f"argument `{name}` is given twice", span)
                continue
            scope.values[name] = v
        self.current_module.append(fn.module)
        try:
            for p in d.params:
                if p.name not in scope.values:
                    if p.default is None:
                        self.err(codes.MISSING_ARGUMENT, f"`{d.name}` needs an argument for `{p.name}`", e.span,
                                 secondary=[Label(p.span, "parameter declared here")] if p.span else [])
                        scope.values[p.name] = POISON
                    else:
                        scope.values[p.name] = self.eval(p.default, fn.env)
                if p.type is not None:
                    from .annotations import check_annotation

                    scope.values[p.name] = check_annotation(self, p.type, scope.values[p.name], e.span,
                                                            f"argument `{p.name}` of `{d.name}`")
            self.call_stack.append((e.span, d.name))
            try:
                if isinstance(d.body, ast.Block):
                    for let in d.body.lets:
                        v = self.eval(let.value, scope)
                        if let.type is not None:
                            from .annotations import check_annotation

                            v = check_annotation(self, let.type, v, let.value.span, f"`{let.name}`")
                        scope = scope.child()
                        scope.values[let.name] = v
                    return self.eval(d.body.result, scope)
                return self.eval(d.body, scope)
            finally:
                self.call_stack.pop()
        finally:
            self.current_module.pop()

    # ------------------------------------------------------------------ helpers

    def module_dir(self) -> Path:
        for p in reversed(self.current_module):
            if p is not None:
                return p.parent
        return Path.cwd()

    def unify_arch(self, values: list[tuple[ModelValue, Span | None]], what: str, span: Span | None):
        """The one architecture of several models, or None (reported) when they differ."""
        archs: dict[str, tuple[Any, Span | None]] = {}
        for v, s in values:
            if v.node.arch is not UNRESOLVED:  # not known yet: it fits any (checked at merge time)
                archs.setdefault(v.node.arch.name, (v.node.arch, s))
        if len(archs) <= 1:
            return next(iter(archs.values()))[0] if archs else values[0][0].node.arch
        if self.options.force:
            return values[0][0].node.arch
        names = list(archs)
        files = {}  # each architecture, and a file that has it (the first model read as it)
        for v, _ in values:
            load = next((n.load for n in v.node.walk() if n.load is not None), None)
            if load is not None:
                files.setdefault(v.node.arch.name, Path(load.path).name)
        self.report(error(
            codes.ARCH_MISMATCH, f"models of different architectures in one {what}: "
                     + ", ".join(f"`{files[n]}` is {n}" if n in files else f"`{n}`" for n in names),
            span, label=f"mixes {' and '.join(names)}",
            secondary=[Label(s, f"this is {n}") for n, (_, s) in archs.items() if s is not None],
            help="a merge needs models of one architecture; check the files, or pass arch= to model() "
                 "if detection is wrong"))
        return None

    def check_number(self, v: Any, span: Span | None, what: str) -> bool:
        if isinstance(v, float) and math.isnan(v):
            self.err(codes.NAN_VALUE, f"{what} is nan", span)
            return False
        return True
