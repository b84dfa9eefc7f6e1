"""The recipe graph: immutable, hash-consed nodes over models.

A node is a model-valued computation: a file (`load`; an adapter file is `adapter`, a Delta whose
keys are the base keys it updates), a built-in operator (`sub`, `add`, `scale`,
`fallback`, `select`) or a registered merge method. Identical sub-expressions are one node (the
`GraphBuilder` interns them), so shared work is computed once per key however many times, and in
however many exports, a recipe uses it. Each node remembers the recipe span that made it.

Every node also knows its key set (`keys`: key -> KeyMeta), computed from the inputs' headers when
it is built: that is what lets the checker report key coverage and shape conflicts before any
tensor is read.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..diagnostics import Span


@dataclass(frozen=True)
class KeyMeta:
    dtype: str  # safetensors dtype of the first source of this key
    shape: tuple[int, ...]


@dataclass(frozen=True)
class HyperRule:
    """One rule of a bound hyperparameter map: selector (an ast selector) -> scalar value."""

    selector: Any
    value: Any
    span: Span | None = field(default=None, compare=False)
    group: int = field(default=0, compare=False)  # rules written together (one map literal, one mbw)


@dataclass(frozen=True)
class BoundHyper:
    """A hyperparameter as a method sees it: a scalar, or rules over one architecture's keys."""

    scalar: Any = None
    rules: tuple[HyperRule, ...] | None = None
    span: Span | None = field(default=None, compare=False)

    @property
    def is_scalar(self) -> bool:
        return self.rules is None


@dataclass(frozen=True)
class ShapeMask:
    """The `component` of a `select` node that hides, from a secondary input of a merge, the keys
    whose shapes differ from the first input's (--force): the merge then takes those keys from
    its first input, as it does keys a secondary input lacks, and the summary counts them."""

    keys: frozenset[str]


@dataclass(frozen=True)
class LoadInfo:
    path: str  # absolute
    name: str  # how the recipe calls it
    header: Any = field(compare=False)  # archs.header.Header
    file_keys: tuple[tuple[str, str], ...] = field(default=(), compare=False)  # canonical -> file key
    sha256: str | None = None
    # A file not found when the recipe was built from Python: checked when it is merged, with the
    # models folder given then (`header` is None and the node has no keys until then).
    deferred: bool = False
    # An adapter file (LoRA, LyCORIS, …): how its tensors map onto the base's keys (kinds.adapter).
    adapter: Any = None
    base: Any = None  # for an adapter: the base node's id (or architecture) it was read against


class Node:
    """A graph node. Created only through `GraphBuilder.node`, so equal nodes are identical."""

    __slots__ = ("op", "args", "hypers", "space", "arch", "load", "component", "origin", "keys",
                 "_key", "id")

    def __init__(self, op: str, args: tuple["Node", ...], hypers: tuple[tuple[str, BoundHyper], ...],
                 space: str, arch: Any, load: LoadInfo | None, component: str | ShapeMask | None,
                 origin: Span | None, keys: dict[str, KeyMeta], key: tuple, id: int):
        self.op = op
        self.args = args
        self.hypers = hypers
        self.space = space  # "weight" | "delta"
        self.arch = arch  # archs.arch.Arch
        self.load = load
        self.component = component  # for `select`: a component's name, or a ShapeMask
        self.origin = origin
        self.keys = keys
        self._key = key
        self.id = id

    def hyper(self, name: str) -> BoundHyper | None:
        return next((h for n, h in self.hypers if n == name), None)

    @property
    def type_name(self) -> str:
        return f"{'Model' if self.space == 'weight' else 'Delta'}[{self.arch.name}]"

    def __repr__(self) -> str:
        return f"Node#{self.id}({self.op}, {self.type_name})"

    def walk(self):
        """Every node reachable from this one, each once, inputs before users."""
        seen: set[int] = set()
        order: list[Node] = []
        stack: list[tuple[Node, bool]] = [(self, False)]
        while stack:
            n, done = stack.pop()
            if done:
                order.append(n)
                continue
            if n.id in seen:
                continue
            seen.add(n.id)
            stack.append((n, True))
            for a in reversed(n.args):
                if a.id not in seen:
                    stack.append((a, False))
        return order


class GraphBuilder:
    def __init__(self) -> None:
        self._interned: dict[tuple, Node] = {}

    def node(self, op: str, args: tuple[Node, ...], *, space: str, arch: Any, keys: dict[str, KeyMeta],
             hypers: tuple[tuple[str, BoundHyper], ...] = (), load: LoadInfo | None = None,
             component: str | ShapeMask | None = None, origin: Span | None = None) -> Node:
        key = (op, tuple(a.id for a in args), hypers, space, getattr(arch, "name", arch), load, component)
        found = self._interned.get(key)
        if found is not None:
            return found
        n = Node(op, args, hypers, space, arch, load, component, origin, keys, key, len(self._interned))
        self._interned[key] = n
        return n

    def __len__(self) -> int:
        return len(self._interned)

    def file_nodes(self) -> list[Node]:
        """Every node that reads a file (a model, or an adapter)."""
        return [n for n in self._interned.values() if n.load is not None]

    def nodes(self, op: str | None = None) -> list[Node]:
        """Every node built so far (of one op, if given), in creation order."""
        return [n for n in self._interned.values() if op is None or n.op == op]


def structure(node: Node) -> tuple:
    """The graph under `node` as nested tuples, independent of the builder that made it: two
    recipes mean the same computation exactly when their structures are equal."""
    memo: dict[int, tuple] = {}
    for n in node.walk():
        memo[n.id] = (n.op, tuple(memo[a.id] for a in n.args), n.hypers, n.space,
                      getattr(n.arch, "name", n.arch), n.load, n.component)
    return memo[node.id]
