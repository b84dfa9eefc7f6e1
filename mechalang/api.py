"""The Python API: recipes built from Python values, checked as they are built, printed as `.mecha`
text, and run by the pipeline.

    import mechalang as mecha

    base = mecha.model("v1-5-pruned.safetensors")
    tuned = mecha.model("anime.safetensors")
    merged = base + 0.5 * (tuned - base)                      # task arithmetic
    mixed = mecha.weighted_sum(base, tuned, alpha=mecha.blocks("sd1", IN00=0.3, default=0.5))
    print(mixed)                                               # the recipe as .mecha text
    mecha.merge(mixed, "mixed.safetensors", threads=4)

A `Recipe` is an immutable value holding an expression of the language and the statements it
needs (the `let` of each model, `param`s, imports of presets). Every function and operator builds
the expression, prints the recipe and checks it with the same checker `mecha check` uses: a
mistake raises `MechaError` at once, listing every diagnostic, pointing into the printed recipe.
A model file that is not found yet is checked when the recipe is merged (pass `models_dir=`
there), so recipes can be written before the models folder is known.
"""

from __future__ import annotations

import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from . import pipeline
from .diagnostics import Diagnostic, SourceMap, render_text
from .syntax import ast
from .syntax.printer import print_module

__all__ = ["MechaError", "Recipe", "blocks", "load", "lora", "mbw", "merge", "model", "param", "preset",
           "method_function", "public_names"]

DISPLAY = "<python>"
_RESULT = "result"  # the name the checked value is bound to (a model never takes it)


class MechaError(Exception):
    """A recipe that cannot be built or run: `diagnostics` lists every problem found; the message
    shows them as `mecha check` would, against the recipe's text."""

    def __init__(self, diagnostics: Iterable[Diagnostic], sources: SourceMap | None = None):
        self.diagnostics = [d for d in diagnostics]
        errors = [d for d in self.diagnostics if d.is_error] or self.diagnostics
        super().__init__("\n" + render_text(errors, sources).rstrip())


# ------------------------------------------------------------------------------------------------
# Bindings: the statements a recipe's expression needs, each with a name unique in this process


@dataclass(frozen=True)
class _Binding:
    name: str
    stmt: ast.Stmt
    order: int  # imports, then params, then model lets, then adapter lets (which name their base)


class _Names:
    """Names of model `let`s, unique in the process: a second file with the same stem gets
    `stem_2`, so recipes built separately combine without clashes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._stmts: dict[str, ast.Stmt] = {}

    def bind(self, base: str, make: Callable[[str], ast.Stmt]) -> tuple[str, ast.Stmt]:
        with self._lock:
            for i in range(1, 10_000):
                name = base if i == 1 else f"{base}_{i}"
                stmt = make(name)
                known = self._stmts.get(name)
                if known is None:
                    self._stmts[name] = stmt
                    return name, stmt
                if known == stmt:
                    return name, known
        raise RuntimeError("too many models with one name")  # pragma: no cover


_NAMES = _Names()
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _merge_bindings(parts: Iterable[tuple[_Binding, ...]]) -> tuple[_Binding, ...]:
    out: dict[str, _Binding] = {}
    for bindings in parts:
        for b in bindings:
            known = out.get(b.name)
            if known is None:
                out[b.name] = b
            elif known.stmt != b.stmt:
                raise MechaError([_api_error(f"`{b.name}` is defined twice, differently: as "
                                             f"`{_stmt_text(known.stmt)}` and as `{_stmt_text(b.stmt)}`")])
    return tuple(sorted(out.values(), key=lambda b: b.order))


def _stmt_text(stmt: ast.Stmt) -> str:
    return print_module(ast.Module((stmt,))).strip()


def _api_error(message: str, help: str | None = None) -> Diagnostic:
    from .diagnostics import codes, error

    return error(codes.INVALID_OPTION, message, None, help=help)


# ------------------------------------------------------------------------------------------------
# Recipes


class Recipe:
    """An immutable, checked recipe value: a model (`Model[A]`), a difference of models
    (`Delta[A]`), a hyperparameter map (`Hyper`) or a plain value.

    `str(recipe)` / `recipe.to_mecha()` is its canonical `.mecha` text; `recipe.type` its type as
    the checker sees it (`Model[sd1]`); `recipe.keys()` the tensor keys of a model value.
    Operators are the language's: `a - b`, `base + 0.5 * delta`, `a | b`, `-delta`, `delta / 2`.
    """

    __slots__ = ("_expr", "_bindings", "_value", "_base_dir", "_models_dirs")

    def __init__(self, expr: ast.Expr, bindings: tuple[_Binding, ...], *, base_dir: Path,
                 models_dirs: tuple[Path, ...] = ()):
        object.__setattr__(self, "_expr", expr)
        object.__setattr__(self, "_bindings", bindings)
        object.__setattr__(self, "_base_dir", base_dir)
        object.__setattr__(self, "_models_dirs", models_dirs)
        object.__setattr__(self, "_value", self._check())

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("a Recipe is immutable: build a new one")

    __delattr__ = __setattr__

    # -- checking ----------------------------------------------------------------------------

    def _module(self, final: ast.Stmt) -> ast.Module:
        return ast.Module(tuple(b.stmt for b in self._bindings) + (final,))

    def _check(self) -> Any:
        text = print_module(self._module(ast.Let(_RESULT, self._expr)))
        program = _load(text, self._base_dir, self._models_dirs, defer=True)
        if not program.ok:
            raise MechaError(program.diagnostics, program.sources)
        return program.names.get(_RESULT)

    # -- what it is --------------------------------------------------------------------------

    @property
    def type(self) -> str:
        """Its type, as the checker sees it: `Model[sd1]`, `Delta[sdxl]`, `Hyper`, `float`..."""
        from .check.values import type_name

        return type_name(self._value)

    @property
    def is_model(self) -> bool:
        """Whether it is a Model (weights), which is what `merge` can write."""
        from .check.values import ModelValue

        return isinstance(self._value, ModelValue) and self._value.node.space == "weight"

    @property
    def arch(self) -> str | None:
        """The architecture of a model or delta (`sd1`); None for other values, and `?` while a
        model file is not found."""
        from .check.values import ModelValue

        return self._value.node.arch.name if isinstance(self._value, ModelValue) else None

    def keys(self) -> list[str]:
        """The tensor keys of a model or delta value, in output order."""
        from .check.values import ModelValue

        if not isinstance(self._value, ModelValue):
            raise TypeError(f"a {self.type} has no keys")
        return list(self._value.node.keys)

    @property
    def node(self):
        """The node of the recipe graph (for tools; None for values that are not models)."""
        from .check.values import ModelValue

        return self._value.node if isinstance(self._value, ModelValue) else None

    # -- text --------------------------------------------------------------------------------

    def expression(self) -> str:
        """The expression alone, as the language writes it."""
        from .syntax.printer import print_expr

        return print_expr(self._expr)

    def to_mecha(self, output: str | os.PathLike = "merged.safetensors", *, dtype: str | None = None) -> str:
        """The recipe as canonical `.mecha` text: a model is exported to `output` (as `dtype`); any
        other value is bound to `result`. `mecha check` accepts it, and loading it gives the same
        recipe graph."""
        if self.is_model:
            final: ast.Stmt = ast.Export(self._expr, ast.String(os.fspath(output)), dtype)
        else:
            final = ast.Let(_RESULT, self._expr)
        return print_module(self._module(final))

    def __str__(self) -> str:
        return self.to_mecha()

    def __repr__(self) -> str:
        return f"<Recipe {self.type}: {self.expression()}>"

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, Recipe) and self._expr == other._expr
                and self._bindings == other._bindings)

    def __hash__(self) -> int:
        return hash((self._expr, self._bindings))

    def __bool__(self) -> bool:
        raise TypeError("a Recipe has no truth value (did you mean to compare with ==?)")

    # -- operators ---------------------------------------------------------------------------

    def __add__(self, other: Any) -> Recipe:
        return _binop("+", self, other)

    def __radd__(self, other: Any) -> Recipe:
        return _binop("+", other, self)

    def __sub__(self, other: Any) -> Recipe:
        return _binop("-", self, other)

    def __rsub__(self, other: Any) -> Recipe:
        return _binop("-", other, self)

    def __mul__(self, other: Any) -> Recipe:
        return _binop("*", self, other)

    def __rmul__(self, other: Any) -> Recipe:
        return _binop("*", other, self)

    def __truediv__(self, other: Any) -> Recipe:
        return _binop("/", self, other)

    def __rtruediv__(self, other: Any) -> Recipe:
        return _binop("/", other, self)

    def __or__(self, other: Any) -> Recipe:
        return _binop("|", self, other)

    def __ror__(self, other: Any) -> Recipe:
        return _binop("|", other, self)

    def __neg__(self) -> Recipe:
        return _build(ast.UnaryOp("-", self._expr), [self])

    def override(self, rules: Mapping[str, Any] | None = None, /, **more: Any) -> Recipe:
        """A hyperparameter map with rules added after its own (later rules win): the language's
        `map with {...}`. Keys are selectors, as in `blocks`."""
        return _build(ast.With(self._expr, _hyper_map(rules, more)), [self])


def _load(text: str, base_dir: Path, models_dirs: Iterable[Path], *, defer: bool = False,
          expect_exports: bool = False, params: Mapping[str, Any] | None = None) -> pipeline.Program:
    return pipeline.load(text=text, name=DISPLAY, base_dir=base_dir, models_dir=list(models_dirs),
                         expect_exports=expect_exports, params=params, defer_missing_models=defer)


def _parts(values: Iterable[Any]) -> list[Recipe]:
    out: list[Recipe] = []
    stack = list(values)
    while stack:
        v = stack.pop(0)
        if isinstance(v, Recipe):
            out.append(v)
        elif isinstance(v, (list, tuple)):
            stack[:0] = list(v)
        elif isinstance(v, Mapping):
            stack[:0] = list(v.values())
    return out


def _build(expr: ast.Expr, values: Iterable[Any], extra: tuple[_Binding, ...] = ()) -> Recipe:
    recipes = _parts(values)
    bindings = _merge_bindings([*(r._bindings for r in recipes), extra])
    base = recipes[0]._base_dir if recipes else Path.cwd()
    dirs: list[Path] = []
    for r in recipes:
        dirs.extend(d for d in r._models_dirs if d not in dirs)
    return Recipe(expr, bindings, base_dir=base, models_dirs=tuple(dirs))


def _binop(op: str, left: Any, right: Any) -> Recipe:
    return _build(ast.BinOp(op, _expr(left), _expr(right)), [left, right])


def _expr(v: Any) -> ast.Expr:
    """A Python value as an expression of the language."""
    if isinstance(v, Recipe):
        return v._expr
    if isinstance(v, bool):
        return ast.Bool(v)
    if isinstance(v, (int, float)):
        from .check.provenance import literal

        return literal(v)
    if isinstance(v, str):
        return ast.String(v)
    if isinstance(v, os.PathLike):
        return ast.String(os.fspath(v))
    if isinstance(v, Mapping):
        return _hyper_map(v, {})
    if isinstance(v, (list, tuple)):
        return ast.ListExpr(tuple(_expr(x) for x in v))
    raise TypeError(f"a recipe cannot hold a {type(v).__name__} ({v!r})")


# ------------------------------------------------------------------------------------------------
# Hyperparameter maps


def _selector(text: str) -> ast.Selector:
    """A map key as a selector: `IN00`, `IN00..IN05`, `OUT*` (a glob over blocks), `attn2`,
    `"OUT*" & attn2`, `!clip_l`, `key("*.proj_in.*")`, `default`."""
    from .syntax.parser import parse_expression

    for candidate in (text, re.sub(r'(?<!["\w])([\w.]*[*?\[][\w.*?\[\]]*)', r'"\1"', text)):
        tree, diags = parse_expression("{" + candidate + ": 0}", DISPLAY)
        if tree is not None and not diags and isinstance(tree, ast.HyperMap) and len(tree.entries) == 1:
            return tree.entries[0].selector
    raise MechaError([_api_error(f"{text!r} is not a selector",
                                 help="a block (IN00), a range (IN00..IN05), a glob over blocks (OUT*), "
                                      "a class (attn2), a component (clip_l), key(\"glob\"), default, "
                                      "or these combined with & and !")])


def _hyper_map(rules: Mapping[str, Any] | None, more: Mapping[str, Any]) -> ast.HyperMap:
    entries = []
    for k, v in [*(rules or {}).items(), *more.items()]:
        if isinstance(v, Recipe) and not v.type.startswith(("float", "int", "bool", "str")):
            raise MechaError([_api_error(f"the value of {k!r} must be a number, not a {v.type}")])
        entries.append(ast.MapEntry(_selector(str(k)), _expr(v)))
    return ast.HyperMap(tuple(entries))


def blocks(arch: str, rules: Mapping[str, Any] | None = None, /, **more: Any) -> Recipe:
    """A per-block (per-class, per-component) hyperparameter for architecture `arch`:
    `blocks("sd1", IN00=0.3, default=0.5)`, or with selectors that are not Python names,
    `blocks("sd1", {"IN00..IN05": 0.3, "OUT*": 0.7, "OUT* & attn2": 0.9, "default": 0.5})`.
    Later rules win; `default` applies where no rule matches. The selectors are checked against
    `arch` at once."""
    from .archs.registry import get_arch
    from .check.selectors import check_selector

    a = get_arch(arch) if isinstance(arch, str) else None
    if a is None:
        from .archs.info import closest_arch_name
        from .diagnostics import codes, error

        sugg = closest_arch_name(str(arch))
        raise MechaError([error(codes.UNKNOWN_ARCH, f"unknown architecture `{arch}`", None,
                                help=f"did you mean `{sugg}`?" if sugg else "`mecha info` lists them")])
    hyper = _hyper_map(rules, more)
    problems = [d for e in hyper.entries for d in check_selector(e.selector, a) if d.is_error]
    if problems:
        raise MechaError(problems)
    return _build(hyper, [*(rules or {}).values(), *more.values()])


def mbw(arch: str, weights: str | Iterable[float]) -> Recipe:
    """A supermerger-style block-weight string (BASE first): `mbw("sd1", "0.5,0.3,...")` or a list
    of numbers."""
    if not isinstance(weights, str):
        weights = ",".join(repr(float(w)) for w in weights)
    return _build(ast.Call(ast.Name("mbw"), (ast.Name(str(arch)), ast.String(weights))), [])


def preset(name: str) -> Recipe:
    """A block-weight preset of `std/presets` (`GRAD_V`, `FLAT_25`, `SMOOTHSTEP`...), for SD1 and
    SDXL."""
    if not _IDENT.fullmatch(name):
        raise MechaError([_api_error(f"{name!r} is not a preset name")])
    stmt = ast.FromImport("std/presets", (ast.ImportName(name),))
    return _build(ast.Name(name), [], (_Binding(name, stmt, 0),))


def param(name: str, default: Any, *, type: str | None = None) -> Recipe:
    """A value that can be changed when the recipe is merged (`merge(..., params={name: value})`,
    or `--set name=value` on the command line): `param("alpha", default=0.5)`. `type` annotates
    it: `"float"`, `"int"`, `"str"`, `"Model"`, `"Model[sd1]"`..."""
    if not _IDENT.fullmatch(name):
        raise MechaError([_api_error(f"{name!r} is not a name: use letters, digits and _")])
    annotation = None
    if type is not None:
        m = re.fullmatch(r"\s*(\w+)\s*(?:\[\s*(\w+)\s*\])?\s*", type)
        if not m:
            raise MechaError([_api_error(f"{type!r} is not a type")])
        annotation = ast.TypeExpr(m.group(1), (ast.TypeExpr(m.group(2)),) if m.group(2) else ())
    stmt = ast.Param(name, annotation, _expr(default))
    return _build(ast.Name(name), [default], (_Binding(name, stmt, 1),))


def _file_call(fname: str, path: str | os.PathLike, first: tuple[ast.Keyword, ...], arch: str | None,
               sha256: str | None, name: str | None, prefix: str) -> tuple[str, ast.Stmt]:
    """`let NAME = fname("path", …, arch=, sha256=)`: the binding of a file the recipe reads, named
    after the file (or `name`), prefixed with `prefix` where that would clash."""
    text = os.fspath(path)
    kwargs = list(first)
    if arch is not None:
        kwargs.append(ast.Keyword("arch", ast.Name(str(arch))))
    if sha256 is not None:
        kwargs.append(ast.Keyword("sha256", ast.String(sha256)))
    call = ast.Call(ast.Name(fname), (ast.String(text),), tuple(kwargs))
    if name is not None and not _IDENT.fullmatch(name):
        raise MechaError([_api_error(f"{name!r} is not a name: use letters, digits and _")])
    from .syntax.grammar import RESERVED_WORDS

    stem = name or re.sub(r"[^A-Za-z0-9_]", "_", Path(text).name.split(".")[0]) or fname
    if not _IDENT.fullmatch(stem) or stem in RESERVED_WORDS or stem == _RESULT or _is_builtin(stem):
        stem = f"{prefix}_{stem}"
    return _NAMES.bind(stem, lambda n: ast.Let(n, call))


def model(path: str | os.PathLike, arch: str | None = None, *, name: str | None = None,
          sha256: str | None = None, models_dir: str | os.PathLike | None = None) -> Recipe:
    """A model file: `model("ghostmix.safetensors")`, `model("x.safetensors", "sdxl")`.

    A relative path is found from the working folder, then in `models_dir` and `MECHA_MODELS_DIR`;
    a file not found yet is checked when the recipe is merged (with the `models_dir` given to
    `merge`). `name` is the name the recipe text gives it (default: from the file name)."""
    bound, stmt = _file_call("model", path, (), arch, sha256, name, "m")
    dirs = (Path(models_dir).expanduser(),) if models_dir is not None else ()
    return Recipe(ast.Name(bound), (_Binding(bound, stmt, 2),), base_dir=Path.cwd(), models_dirs=dirs)


def lora(path: str | os.PathLike, base: Recipe | None = None, *, arch: str | None = None, name: str | None = None,
         sha256: str | None = None, models_dir: str | os.PathLike | None = None) -> Recipe:
    """An adapter file (LoRA of any dialect, LyCORIS, OFT) as a Delta: `base + 0.8 * lora("style.safetensors",
    base)`. `base` gives the keys and shapes it updates (and is needed by DoRA, (IA)³ and OFT); without it
    the architecture is `arch`, or the one whose key names the adapter's match."""
    first = (ast.Keyword("base", _expr(base)),) if base is not None else ()
    bound, stmt = _file_call("lora", path, first, arch, sha256, name, "l")
    recipe = _build(ast.Name(bound), [base] if base is not None else [], (_Binding(bound, stmt, 3),))
    if models_dir is not None:
        dirs = recipe._models_dirs + (Path(models_dir).expanduser(),)
        return Recipe(recipe._expr, recipe._bindings, base_dir=recipe._base_dir, models_dirs=dirs)
    return recipe


def _is_builtin(name: str) -> bool:
    from .check.builtins import builtin_names

    return name in builtin_names()


def load(path: str | os.PathLike, /, **params: Any) -> Recipe:
    """The recipe of a `.mecha` file (its one export), with its params set by name:
    `load("block_weighted.mecha", alpha=0.7)`. In text it is the builtin
    `recipe("block_weighted.mecha", alpha=0.7)`."""
    p = Path(path).expanduser()
    if not p.is_absolute():
        p = Path.cwd() / p
    call = ast.Call(ast.Name("recipe"), (ast.String(os.fspath(p)),),
                    tuple(ast.Keyword(k, _expr(v)) for k, v in params.items()))
    return _build(call, list(params.values()))


# ------------------------------------------------------------------------------------------------
# Merge methods as functions


def method_function(method_name: str) -> Callable[..., Recipe]:
    """The Python function of a registered merge method: models positionally, hyperparameters by
    name (a Python keyword takes a trailing `_`: `lambda_=`)."""
    from .methods.registry import REGISTRY

    spec = REGISTRY.get(method_name)
    if spec is None:
        raise AttributeError(method_name)

    def call(*models: Any, **hypers: Any) -> Recipe:
        kwargs = tuple(ast.Keyword(_recipe_keyword(k), _expr(v)) for k, v in hypers.items())
        expr = ast.Call(ast.Name(spec.name), tuple(_expr(m) for m in models), kwargs)
        return _build(expr, [*models, *hypers.values()])

    call.__name__ = call.__qualname__ = spec.name
    call.__doc__ = "\n\n".join(x for x in (spec.signature(), spec.formula, spec.doc) if x)
    return call


def _recipe_keyword(k: str) -> str:
    return k[:-1] if k.endswith("_") and not k.endswith("__") else k


def public_names() -> list[str]:
    """What `dir(mechalang)` lists: the API and every registered merge method."""
    from .methods.registry import REGISTRY

    return sorted(set(__all__) - {"method_function", "public_names"} | set(REGISTRY.names()))


# ------------------------------------------------------------------------------------------------
# Running


def merge(recipe: Recipe | Mapping[str | os.PathLike, Recipe] | str | os.PathLike,
          output: str | os.PathLike | None = None, *, models_dir: str | os.PathLike | None = None,
          dtype: str | None = None, params: Mapping[str, Any] | None = None, threads: int | None = None,
          device: str = "cpu", precision: str = "fp32", overwrite: bool = False, strict: bool = False,
          check_finite: bool = False, hash_inputs: bool = False,
          progress: Callable[[int, int], None] | None = None, cancel: threading.Event | None = None,
          as_lora: Mapping[str, Any] | bool | None = None):
    """Merge and write, streaming key by key; returns the run's statistics (`RunStats`).

    recipe: a model recipe (written to `output`), or `{output: recipe, ...}` for several outputs
        that share their common work, or the path of a `.mecha` file (its exports run).
    models_dir: where to find model files the recipe names by relative path.
    dtype: the output dtype (`fp16`, `bf16`, `fp32`, `fp8`); default: the first model's.
    params: values for the recipe's `param`s.
    as_lora: write a Delta as a LoRA: True, or its options (`{"rank": 32, "dialect": "peft"}`), as
        `export … as lora(rank=32, dialect="peft")` does.
    Every other option is `mecha run`'s. Raises `MechaError` when the recipe does not check or the
    run fails (then nothing is written).
    """
    dirs = [models_dir] if models_dir is not None else []
    if isinstance(recipe, (str, os.PathLike)) and not isinstance(recipe, Recipe):
        if output is not None:
            raise TypeError("merge(path.mecha) writes the file's own exports: give no output")
        program = pipeline.load(recipe, params=params, models_dir=dirs)
    else:
        targets = {output: recipe} if isinstance(recipe, Recipe) else dict(recipe)
        if isinstance(recipe, Recipe) and output is None:
            raise TypeError("merge(recipe, output): say where to write the merged model")
        recipes = list(targets.values())
        if not recipes or not all(isinstance(r, Recipe) for r in recipes):
            raise TypeError("merge() takes a Recipe, or a mapping of output paths to Recipes")
        bindings = _merge_bindings(r._bindings for r in recipes)
        for r in recipes:
            if not r.is_model and not as_lora:
                raise MechaError([_api_error(f"only a Model can be written, not a {r.type}: "
                                             f"{r.expression()}", help="add it to a base model: base + delta")])
            dirs.extend(d for d in r._models_dirs if d not in dirs)
        fmt = None
        if as_lora:
            options = as_lora if isinstance(as_lora, Mapping) else {}
            fmt = ast.Call(ast.Name("lora"), (), tuple(ast.Keyword(k, _expr(v)) for k, v in options.items()))
        exports = tuple(ast.Export(r._expr, ast.String(os.fspath(Path(out).expanduser().resolve())),
                                   "lora" if fmt is not None else dtype, fmt)
                        for out, r in targets.items())
        text = print_module(ast.Module(tuple(b.stmt for b in bindings) + exports))
        program = _load(text, recipes[0]._base_dir, dirs, expect_exports=True, params=params)
    result = pipeline.run(program, precision=precision, strict=strict, hash_inputs=hash_inputs,
                          device=device, threads=threads, overwrite=overwrite, check_finite=check_finite,
                          progress=progress, cancel=cancel)
    if not result.ok:
        raise MechaError(result.diagnostics, program.sources)
    return result.stats
