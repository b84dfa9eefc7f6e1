"""The model-kind registry: what an adapter file's tensors mean, and the `@model_kind` decorator.

A *kind* (LoRA, LoHa, LoKr, (IA)³, a full diff, OFT, …) is declared once, from Python, like a merge
method:

    @model_kind("loha", parts={"hada_w1_a": "w1a", "hada_w1_b": "w1b", …, "alpha": "alpha"},
                required=("w1a", "w1b", "w2a", "w2b"), formula="ΔW = (α/r)·(w1a·w1b) ⊙ (w2a·w2b)")
    def loha(parts, ctx):            # parts: part name -> fp32/fp64 tensor; ctx: KindContext
        ...                          # returns the delta of the target weight (ctx.shape)

and gives two functions:

- the *delta* (above), called by the engine with the group's tensors for one target key (torch);
- optionally `shape=`, called by the checker with the group's tensor SHAPES only (no torch): it
  returns the delta's shape and rank, or a problem, so a base that does not fit is reported before
  any tensor is read. Without it the delta's shape is taken to be the target's.

A tensor named `MODULE.SUFFIX` belongs to kind K when SUFFIX is one of K's `parts` (the longest
matching suffix wins, so `lora_up.weight` is never mistaken for `weight`); all of a module's tensors
of one kind form a *group*, which updates one checkpoint key (the module's weight, or its bias for
kinds with `target="bias"`). Dialects only spell the module name differently (kohya `lora_unet_…`,
PEFT `base_model.model.…`, diffusers `unet.…`): that mapping is data (archs/keymap.py).

`needs_base=True` kinds (DoRA's re-normalisation, (IA)³, OFT) get the base weight as `ctx.base`;
the checker then requires `lora(…, base=model)`.

This module never imports torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

Shape = tuple[int, ...]


@dataclass(frozen=True)
class Inferred:
    """What the checker learns about one group from its tensors' shapes."""

    shape: Shape | None = None  # the delta's shape (None: the target's, whatever it is)
    rank: int | None = None
    out: int | None = None  # the output rows the target must have, when `shape` is None
    problem: str | None = None  # a sentence: why these tensors cannot form a delta


@dataclass(frozen=True)
class KindContext:
    """What a kind's delta function is told about the target, besides the group's tensors."""

    key: str  # the checkpoint key updated
    shape: Shape  # the delta's shape (a row slice's, for fused keys)
    params: dict[str, Any] = field(default_factory=dict)  # alpha, rank, rslora, fan_in_fan_out, …
    base: Any = None  # the base weight (same shape), for needs_base kinds


@dataclass(frozen=True)
class KindSpec:
    name: str
    parts: dict[str, str]  # tensor-name suffix (every dialect's spelling) -> part name
    required: tuple[str, ...]  # parts a group must have to be this kind ("a|b": either)
    delta: Callable = field(repr=False, compare=False)
    shape: Callable | None = field(default=None, repr=False, compare=False)
    formula: str = ""
    doc: str = ""
    target: str = "weight"  # "weight" | "bias": which tensor of the module the group updates
    # True, or the parts whose presence makes a group need the base weight (DoRA's magnitude)
    needs_base: bool | tuple[str, ...] = False
    # An optional exporter: (delta tensor, rank, options) -> {part name: tensor}, used by
    # `export … as lora(dialect=…)`; kinds without one cannot be written.
    inverse: Callable | None = field(default=None, repr=False, compare=False)
    source: str = "builtin"

    @property
    def part_names(self) -> list[str]:
        return sorted(set(self.parts.values()))

    def complete(self, parts) -> bool:
        """Whether a group with these parts (part names) has everything this kind requires."""
        return all(any(p in parts for p in alt.split("|")) for alt in self.required)

    def group_needs_base(self, parts) -> bool:
        if isinstance(self.needs_base, bool):
            return self.needs_base
        return any(p in parts for p in self.needs_base)


class KindRegistry:
    def __init__(self) -> None:
        self._kinds: dict[str, KindSpec] = {}
        # every kind's tensor suffixes, and the most dots one has: a name is split by looking up
        # its last 1..n dotted parts, longest first (a lookup per try, not a scan of all suffixes)
        self._suffixes: frozenset[str] | None = None
        self._max_dots = 0

    def register(self, spec: KindSpec) -> None:
        if spec.name in self._kinds:
            raise ValueError(f"model kind `{spec.name}` is already registered "
                             f"(by {self._kinds[spec.name].source})")
        self._kinds[spec.name] = spec
        self._suffixes = None

    def get(self, name: str) -> KindSpec | None:
        _ensure_builtins()
        return self._kinds.get(name)

    def names(self) -> list[str]:
        _ensure_builtins()
        return list(self._kinds)

    def all(self) -> list[KindSpec]:
        _ensure_builtins()
        return list(self._kinds.values())

    def split(self, tensor_name: str) -> tuple[str, str] | None:
        """(module name, suffix) of an adapter tensor name, the longest known suffix winning (so
        `x.lora_up.weight` is never read as `x.lora_up` + `weight`); None when no kind knows it.
        Several kinds may share a suffix (`alpha`): a module's other tensors decide its kind."""
        _ensure_builtins()
        if self._suffixes is None:
            self._suffixes = frozenset(s for k in self._kinds.values() for s in k.parts)
            self._max_dots = max((s.count(".") for s in self._suffixes), default=0)
        parts = tensor_name.rsplit(".", self._max_dots + 1)
        for n in range(min(len(parts) - 1, self._max_dots + 1), 0, -1):  # the longest suffix first
            suffix = ".".join(parts[-n:])
            if suffix in self._suffixes:
                return tensor_name[: -len(suffix) - 1], suffix
        return None


KINDS = KindRegistry()
_current_source = ["builtin"]
_builtins_loaded = [False]


def model_kind(name: str, *, parts: dict[str, str], required: tuple[str, ...] | list[str],
               formula: str = "", shape: Callable | None = None, target: str = "weight",
               needs_base: bool | tuple[str, ...] = False, inverse: Callable | None = None):
    """Register a model kind (see the module docstring). Returns the function unchanged."""
    if target not in ("weight", "bias"):
        raise ValueError(f"model kind `{name}`: target must be \"weight\" or \"bias\"")
    missing = [p for alt in required for p in alt.split("|") if p not in parts.values()]
    if missing:
        raise ValueError(f"model kind `{name}`: required part(s) {missing} are not in parts")

    def decorate(func: Callable) -> Callable:
        doc = (func.__doc__ or "").strip()
        KINDS.register(KindSpec(name, dict(parts), tuple(required), func, shape, formula,
                                _dedent(doc), target, needs_base, inverse, _source()))
        return func

    return decorate


def _source() -> str:
    """Who registers: an entry point of ours, else the plugin file being imported (the method
    registry tracks `--plugin` files), else the built-ins."""
    if _current_source[0] != "builtin":
        return _current_source[0]
    from ..methods import registry as methods

    return methods._current_source[0]


def _dedent(text: str) -> str:
    import inspect

    return inspect.cleandoc(text) if text else ""


def _ensure_builtins() -> None:
    if _builtins_loaded[0]:
        return
    _builtins_loaded[0] = True
    from . import builtin  # noqa: F401  (registers the built-in kinds)

    for problem in load_entry_points():  # installed packages' kinds, like their merge methods
        import warnings

        warnings.warn(problem)


def load_entry_points() -> list[str]:
    """Register kinds from installed packages' `mechalang.kinds` entry points; problems as text."""
    from ..methods.registry import load_entry_point_group

    return load_entry_point_group("mechalang.kinds", _current_source)
