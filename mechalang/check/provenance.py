"""The recipe text stored with every output: the recipe that ran, as canonical text.

It is the main module with
- each `param` given the value it had in this run (`--set` values included): numbers, strings,
  lists and architectures as literals; a model, or another recipe passed as one (`--set
  a=other.mecha`), inlined as the expression of its recipe graph (`weighted_sum(model("x"), …)`),
  or, when it has no expression form, referenced by its path (and its sha256 recorded next to
  the recipe, see `ParamSource`);
- every file path (models, adapters, imports, `recipe(…)`, outputs) relative, never absolute: to
  the recipe's folder when the file is inside it, else to the models folder it was found in, else
  the relative path from the recipe's folder;
- each export's path the file this run wrote (`-o` included).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterable

from ..graph.nodes import BoundHyper, Node, ShapeMask
from ..syntax import ast
from ..syntax.printer import print_module
from .values import ArchValue, ListValue, ModelValue

MAX_INLINE_NODES = 5_000  # a recipe graph printed as one expression repeats shared parts: bounded
_FILE_CALLS = ("model", "lora", "recipe")


@dataclass(frozen=True)
class ParamSource:
    """A param that another recipe file gave (`--set a=other.mecha`): its file, for the
    provenance's reference when the value cannot be inlined."""

    path: Path


def literal(value: Any) -> ast.Expr | None:
    """An AST literal for a param value (None when it has no literal form)."""
    if isinstance(value, bool):
        return ast.Bool(value)
    if isinstance(value, (int, float)):
        text = repr(value)
        if text.startswith("-"):
            return ast.UnaryOp("-", ast.Number(text[1:]))
        return ast.Number(text)
    if isinstance(value, str):
        return ast.String(value)
    if isinstance(value, ArchValue):
        return ast.Name(value.arch.name)
    if isinstance(value, ListValue):
        items = [literal(v) for v in value.items]
        return None if any(i is None for i in items) else ast.ListExpr(tuple(items))
    if isinstance(value, ModelValue) and value.node.op == "load":
        return ast.Call(ast.Name("model"), (ast.String(value.node.load.path),))
    return None


# ------------------------------------------------------------------------------------------------
# paths


class PathStorer:
    """How a file path is written into the stored recipe (see the module's docstring)."""

    def __init__(self, recipe_dir: Path, models_dirs: Iterable[Path]):
        self.recipe_dir = recipe_dir.resolve()
        self.models_dirs = [Path(d).expanduser().resolve() for d in models_dirs]

    def stored(self, path: str | os.PathLike) -> str:
        p = Path(path).expanduser()
        if not p.is_absolute():
            return Path(path).as_posix()
        p = p.resolve()
        for folder in (self.recipe_dir, *self.models_dirs):
            if p.is_relative_to(folder):
                return p.relative_to(folder).as_posix()
        try:
            return Path(os.path.relpath(p, self.recipe_dir)).as_posix()
        except ValueError:  # another drive (Windows): the name alone, found through --models-dir
            return p.name

    def written(self, text: str, kind: str) -> str:
        """A path as the recipe wrote it (`kind`: a file call's name, "import" or "export"),
        resolved the way the checker resolves it, then stored."""
        p = Path(text).expanduser()
        if p.is_absolute():
            return self.stored(p)
        if kind == "model" or kind == "lora":
            for folder in (self.recipe_dir, *self.models_dirs):
                if (folder / p).exists():
                    return self.stored(folder / p)
        return p.as_posix()


# ------------------------------------------------------------------------------------------------
# a recipe graph as an expression


def node_expr(node: Node, paths: PathStorer) -> ast.Expr | None:
    """The expression that builds `node` again (None when a part has no expression form, or the
    expression would be too large)."""
    memo: dict[int, tuple[ast.Expr, int]] = {}
    for n in node.walk():  # inputs before users
        args = [memo[a.id] for a in n.args if a.id in memo]
        if len(args) != len(n.args):
            return None
        size = 1 + sum(s for _, s in args)
        if size > MAX_INLINE_NODES:
            return None
        expr = _one(n, [e for e, _ in args], paths)
        if expr is None:
            return None
        memo[n.id] = (expr, size)
    return memo[node.id][0]


def _one(n: Node, args: list[ast.Expr], paths: PathStorer) -> ast.Expr | None:
    if n.op == "load":
        kw = [ast.Keyword("arch", ast.Name(n.arch.name))]
        if n.load.sha256:
            kw.append(ast.Keyword("sha256", ast.String(n.load.sha256)))
        return ast.Call(ast.Name("model"), (ast.String(paths.stored(n.load.path)),), tuple(kw))
    if n.op == "select":
        if isinstance(n.component, ShapeMask):  # made again by --force, from the inputs' shapes
            return args[0]
        return ast.Attribute(args[0], n.component)
    if n.op == "scale":
        factor = _hyper(n.hyper("factor"))
        return None if factor is None else ast.BinOp("*", factor, args[0])
    if n.op in ("add", "sub", "fallback"):
        return ast.BinOp({"add": "+", "sub": "-", "fallback": "|"}[n.op], args[0], args[1])
    if n.op == "adapter":
        return None
    keywords = []
    for name, bound in n.hypers:
        value = _hyper(bound)
        if value is None:
            return None
        keywords.append(ast.Keyword(name, value))
    return ast.Call(ast.Name(n.op), tuple(args), tuple(keywords))


def _hyper(bound: BoundHyper | None) -> ast.Expr | None:
    if bound is None:
        return None
    if bound.is_scalar:
        return literal(bound.scalar)
    entries = []
    for rule in bound.rules:
        value = literal(rule.value)
        if value is None:
            return None
        entries.append(ast.MapEntry(rule.selector, value))
    return ast.HyperMap(tuple(entries))


# ------------------------------------------------------------------------------------------------
# the stored text


def _rewrite(node: Any, fn: Callable[[Any], Any]) -> Any:
    """`node` with `fn` applied to every AST node below it, children first (fn returns the node
    itself when it leaves it unchanged)."""
    if isinstance(node, tuple):
        items = tuple(_rewrite(n, fn) for n in node)
        return node if all(a is b for a, b in zip(items, node)) else items
    if not isinstance(node, ast.Node):
        return node
    changes = {}
    for f in node.__dataclass_fields__:
        if f.endswith("span") or f == "comments":
            continue
        v = getattr(node, f)
        if isinstance(v, (ast.Node, tuple)):
            new = _rewrite(v, fn)
            if new is not v:
                changes[f] = new
    return fn(replace(node, **changes) if changes else node)


def stored_recipe_text(tree: ast.Module, params: dict[str, Any], paths: PathStorer,
                       outputs: list[Path | None], sources: dict[str, ParamSource] | None = None) -> str:
    """The recipe that ran (see the module's docstring). `outputs`: each `export`'s file, in
    order (None: as written)."""
    sources = sources or {}

    def file_paths(n: Any) -> Any:
        if (isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id in _FILE_CALLS
                and n.args and isinstance(n.args[0], ast.String)):
            stored = paths.written(n.args[0].value, n.func.id)
            if stored != n.args[0].value:
                return replace(n, args=(ast.String(stored), *n.args[1:]))
        if isinstance(n, (ast.Import, ast.FromImport)):
            stored = paths.written(n.path, "import")
            if stored != n.path:
                return replace(n, path=stored)
        return n

    stmts = []
    exports = iter(outputs)
    for s in tree.statements:
        if isinstance(s, ast.Param) and params.get(s.name) is not None:
            value = params[s.name]
            lit = node_expr(value.node, paths) if isinstance(value, ModelValue) else literal(value)
            if lit is None and s.name in sources:
                lit = ast.Call(ast.Name("recipe"), (ast.String(paths.stored(sources[s.name].path)),))
            if lit is not None:
                s = replace(s, default=lit)
        elif isinstance(s, ast.Export):
            out = next(exports, None)
            if out is not None:
                s = replace(s, path=ast.String(paths.stored(out)))
        s = _rewrite(s, file_paths)
        stmts.append(s)
    return print_module(ast.Module(tuple(stmts)))
