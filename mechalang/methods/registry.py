"""The merge-method registry: the `@merge_method` decorator and the signatures the checker reads.

A method is a plain Python function over the tensors of ONE key:

    @merge_method(formula="(1 − α)·a + α·b", family="linear")
    def weighted_sum(a: Same, b: Same, *, alpha: Float(0.0, 1.0) = 0.5) -> Same:
        return a + alpha * (b - a)

- Positional parameters are models. Their annotation gives their space: `Weight`, `Delta`, or
  `Same` (all `Same` parameters share one space, weight or delta, and `-> Same` returns it).
- `*models: Same` makes the method variadic (`min_models=` on the decorator bounds the count,
  counting fixed and variadic model parameters together).
- Keyword-only parameters are hyperparameters: annotated with `Float(lo, hi)`, `Int(lo, hi)`,
  `Bool()` or `Choice("a", "b")`, their Python default is the method's default (no default: the
  recipe must give one). Each may be given per key in a recipe (a `Hyper`).
- A keyword-only parameter annotated `KeyName` receives the tensor key's name (for per-key seeds).
- A hyperparameter whose Python name ends in `_` is known to recipes without it (`lambda_` is
  `lambda`); the engine calls the function with `HyperParam.arg`.

This module never imports torch: the checker reads signatures without loading any tensor code.
Method modules get torch from `mechalang.methods._lazy`, which imports it on first use.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass, field
from typing import Any, Callable

# ------------------------------------------------------------------------------------------------
# Spaces of model parameters


class Space:
    """A model parameter's space. Compared by name."""

    def __init__(self, name: str):
        self.name = name

    def __repr__(self) -> str:
        return self.name

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Space) and other.name == self.name

    def __hash__(self) -> int:
        return hash(self.name)


Weight = Space("weight")  # a full model's weights
Delta = Space("delta")  # a difference of two models (task vector)
Same = Space("same")  # weight or delta, the same for every `Same` parameter and the result


# ------------------------------------------------------------------------------------------------
# Hyperparameter kinds


@dataclass(frozen=True)
class HyperKind:
    type: str  # "float" | "int" | "bool" | "str"
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False
    choices: tuple[str, ...] = ()

    def describe(self) -> str:
        if self.type == "str":
            return "one of " + ", ".join(literal(c) for c in self.choices)
        if self.lo is None and self.hi is None:
            return self.type
        lo = "-inf" if self.lo is None else _fmt(self.lo)
        hi = "inf" if self.hi is None else _fmt(self.hi)
        return f"{self.type} in {'(' if self.lo_open else '['}{lo}, {hi}{')' if self.hi_open else ']'}"

    def check(self, value: Any) -> str | None:
        """None when `value` is acceptable, else why not (a phrase)."""
        if self.type == "bool":
            return None if isinstance(value, bool) else f"expected true or false, got {literal(value)}"
        if self.type == "str":
            if not isinstance(value, str):
                return f"expected a string, got {literal(value)}"
            return None if not self.choices or value in self.choices else f"expected {self.describe()}"
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"expected a number, got {literal(value)}"
        if isinstance(value, int) and self.type == "float":
            try:
                float(value)
            except OverflowError:
                return f"{_short(value)} is too large for a float"
        if self.type == "int" and isinstance(value, int) and not -(2 ** 63) <= value < 2 ** 63:
            return f"{_short(value)} does not fit in 64 bits"
        if self.type == "int" and not (isinstance(value, int) or float(value).is_integer()):
            return f"expected a whole number, got {literal(value)}"
        if isinstance(value, float) and math.isnan(value):
            return "expected a number, got nan"
        if self.lo is not None and (value < self.lo or (self.lo_open and value == self.lo)):
            return f"{_fmt(value)} is outside {self.describe()}"
        if self.hi is not None and (value > self.hi or (self.hi_open and value == self.hi)):
            return f"{_fmt(value)} is outside {self.describe()}"
        return None


def _short(v: int) -> str:
    text = str(v)
    return text if len(text) <= 24 else f"{text[:10]}…{text[-4:]} ({len(text.lstrip('-'))} digits)"


def literal(v: Any) -> str:
    """A value as recipes write it: `true`, `"magnitude"`, `0.5`."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return repr(v)


def _fmt(x: float) -> str:
    if isinstance(x, float) and x.is_integer() and abs(x) < 1e15:
        return str(int(x))
    return repr(x)


def Float(lo: float | None = None, hi: float | None = None, *, lo_open: bool = False,
          hi_open: bool = False) -> HyperKind:
    return HyperKind("float", lo, hi, lo_open, hi_open)


def Int(lo: int | None = None, hi: int | None = None) -> HyperKind:
    return HyperKind("int", lo, hi)


def Bool() -> HyperKind:
    return HyperKind("bool")


def Choice(*choices: str) -> HyperKind:
    return HyperKind("str", choices=tuple(choices))


class _KeyName:
    def __repr__(self) -> str:
        return "KeyName"


KeyName = _KeyName()  # annotation: receives the tensor key's name


# ------------------------------------------------------------------------------------------------
# Signatures


@dataclass(frozen=True)
class ModelParam:
    name: str
    space: Space


@dataclass(frozen=True)
class HyperParam:
    name: str  # as recipes write it
    kind: HyperKind
    default: Any = None
    required: bool = False
    pyname: str = ""  # the Python parameter: `lambda_` for the recipe name `lambda`

    @property
    def arg(self) -> str:
        return self.pyname or self.name


@dataclass(frozen=True)
class MethodSpec:
    name: str
    func: Callable = field(repr=False, compare=False)
    models: tuple[ModelParam, ...]
    variadic: ModelParam | None
    min_models: int
    max_models: int | None
    hypers: tuple[HyperParam, ...]
    returns: Space
    key_param: str | None
    formula: str
    family: str
    doc: str
    source: str = "builtin"  # "builtin", or the plugin that registered it
    # Each output element depends only on the same element of the inputs: the engine may then
    # compute a large key in slices (bounded memory, parallel within one tensor).
    elementwise: bool = False
    # A method that is element-wise once a few statistics of its whole input tensors are known
    # (TIES: each task vector's magnitude threshold) may give a *stream factory*: the engine then
    # evaluates a large key in slices, passing over them first to gather the statistics, with
    # memory of a few slices instead of several whole tensors. `streamed(numel, **hypers)` (the
    # keyword arguments the method itself gets, key included) returns an object with
    #   wants_pass() -> bool       another pass over all slices is needed before `apply`
    #   observe(args) -> None      one slice of every input (1-D, compute dtype), during a pass
    #   end_pass() -> None         after the last slice of a pass
    #   apply(args) -> Tensor      the result for one slice, once no more passes are wanted
    # Results must be bit-identical to calling the method on the whole tensors.
    streamed: Callable | None = field(default=None, repr=False, compare=False)

    def hyper(self, name: str) -> HyperParam | None:
        return next((h for h in self.hypers if h.name == name), None)

    @property
    def peer_notes(self) -> str:
        """The docstring's "Compared with peers:" paragraph (how this differs from mergekit's or
        sd-mecha's method of the same name, and what to write to get theirs), or ""."""
        for para in self.doc.split("\n\n"):
            if para.startswith("Compared with peers:"):
                return " ".join(para.split())
        return ""

    def signature(self) -> str:
        parts = [f"{m.name}: {m.space.name}" for m in self.models]
        if self.variadic:
            parts.append(f"*{self.variadic.name}: {self.variadic.space.name}")
        for h in self.hypers:
            default = "" if h.required else f" = {literal(h.default)}"
            parts.append(f"{h.name}: {h.kind.describe()}{default}")
        return f"{self.name}({', '.join(parts)}) -> {self.returns.name}"


class MethodRegistry:
    def __init__(self) -> None:
        self._methods: dict[str, MethodSpec] = {}

    def register(self, spec: MethodSpec, *, replace: bool = False) -> None:
        if spec.name in self._methods and not replace and self._methods[spec.name].func is not spec.func:
            raise ValueError(f"a merge method named {spec.name!r} is already registered "
                             f"(by {self._methods[spec.name].source})")
        self._methods[spec.name] = spec

    def get(self, name: str) -> MethodSpec | None:
        _ensure_builtins()
        return self._methods.get(name)

    def names(self) -> list[str]:
        _ensure_builtins()
        return sorted(self._methods)

    def all(self) -> list[MethodSpec]:
        _ensure_builtins()
        return [self._methods[n] for n in sorted(self._methods)]


REGISTRY = MethodRegistry()
_current_source = ["builtin"]


def merge_method(func: Callable | None = None, *, name: str | None = None, formula: str = "",
                 family: str = "other", min_models: int | None = None, max_models: int | None = None,
                 elementwise: bool = False, streamed: Callable | None = None,
                 registry: MethodRegistry | None = None):
    """Register a merge method. Usable bare (`@merge_method`) or with options."""

    def wrap(f: Callable) -> Callable:
        spec = build_spec(f, name=name, formula=formula, family=family, min_models=min_models,
                          max_models=max_models, elementwise=elementwise, streamed=streamed)
        (registry or REGISTRY).register(spec)
        f.__merge_method__ = spec  # type: ignore[attr-defined]
        return f

    return wrap(func) if func is not None else wrap


def build_spec(f: Callable, *, name: str | None = None, formula: str = "", family: str = "other",
               min_models: int | None = None, max_models: int | None = None,
               elementwise: bool = False, streamed: Callable | None = None) -> MethodSpec:
    try:
        # Resolve string annotations (`from __future__ import annotations` in a plugin).
        sig = inspect.signature(f, eval_str=True)
    except Exception:
        sig = inspect.signature(f)
    models: list[ModelParam] = []
    variadic: ModelParam | None = None
    hypers: list[HyperParam] = []
    key_param: str | None = None
    mname = name or f.__name__
    for p in sig.parameters.values():
        ann = p.annotation
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
            if not isinstance(ann, Space):
                raise TypeError(f"{mname}: model parameter {p.name!r} needs a space annotation "
                                "(Weight, Delta or Same)")
            models.append(ModelParam(p.name, ann))
        elif p.kind == p.VAR_POSITIONAL:
            if not isinstance(ann, Space):
                raise TypeError(f"{mname}: *{p.name} needs a space annotation (Weight, Delta or Same)")
            variadic = ModelParam(p.name, ann)
        elif p.kind == p.KEYWORD_ONLY:
            if ann is KeyName:
                key_param = p.name
                continue
            if not isinstance(ann, HyperKind):
                raise TypeError(f"{mname}: hyperparameter {p.name!r} needs a kind annotation "
                                "(Float(...), Int(...), Bool() or Choice(...))")
            required = p.default is inspect.Parameter.empty
            default = None if required else p.default
            if not required and ann.check(default) is not None:
                raise TypeError(f"{mname}: default of {p.name!r} ({default!r}) is not {ann.describe()}")
            # A trailing underscore lets a method use a Python keyword as a hyperparameter name
            # (`lambda_` is `lambda` in recipes, as mergekit users know it).
            public = p.name[:-1] if p.name.endswith("_") and not p.name.endswith("__") else p.name
            hypers.append(HyperParam(public, ann, default, required, p.name))
        else:
            raise TypeError(f"{mname}: **{p.name} is not supported in a merge method")
    ret = sig.return_annotation
    if not isinstance(ret, Space):
        raise TypeError(f"{mname}: the return annotation must be Weight, Delta or Same")
    if ret == Same and not any(m.space == Same for m in models + ([variadic] if variadic else [])):
        raise TypeError(f"{mname}: returns Same but has no Same model parameter")
    fixed = len(models)
    lo = min_models if min_models is not None else (fixed + (1 if variadic else 0))
    hi = max_models if max_models is not None else (None if variadic else fixed)
    doc = inspect.cleandoc(f.__doc__ or "")
    elementwise = elementwise or bool(getattr(f, "elementwise", False))
    return MethodSpec(mname, f, tuple(models), variadic, lo, hi, tuple(hypers), ret, key_param,
                      formula, family, doc, _source_of(f), elementwise, streamed)


def _source_of(f: Callable) -> str:
    """Where a method comes from: the plugin or entry point being loaded, `builtin` for
    mechalang's own modules, else the module that defined it (a script, a notebook)."""
    if _current_source[0] != "builtin":
        return _current_source[0]
    module = getattr(f, "__module__", "") or ""
    return "builtin" if module.startswith("mechalang.methods.") else (module or "python")


# ------------------------------------------------------------------------------------------------
# Built-in method modules are imported on first lookup (they import torch lazily).

_BUILTIN_MODULES = [
    "mechalang.methods.linear",
    "mechalang.methods.spherical",
    "mechalang.methods.sparse",
    "mechalang.methods.sd_mergers",
    "mechalang.methods.linalg",
]
_loaded = [False]


def _ensure_builtins() -> None:
    if _loaded[0]:
        return
    _loaded[0] = True
    import importlib
    import importlib.util

    for mod in _BUILTIN_MODULES:
        if importlib.util.find_spec(mod) is not None:
            importlib.import_module(mod)
    for problem in load_entry_points():
        import warnings

        warnings.warn(problem)


def load_entry_points() -> list[str]:
    """Register methods from installed packages' `mechalang.methods` entry points; problems as text."""
    return load_entry_point_group("mechalang.methods", _current_source)


def load_entry_point_group(group: str, current_source: list[str]) -> list[str]:
    """Import every module of an entry-point group (they register what they define, as they are
    imported), with `current_source[0]` naming the one being imported; problems as text."""
    from importlib.metadata import entry_points

    problems = []
    for ep in entry_points(group=group):
        previous = current_source[0]
        current_source[0] = f"{ep.name} ({ep.value})"
        try:
            ep.load()
        except Exception as exc:
            problems.append(f"entry point {ep.name}: {type(exc).__name__}: {exc}")
        finally:
            current_source[0] = previous
    return problems
