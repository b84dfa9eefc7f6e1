"""An architecture: its components, blocks and classes, as ordered glob patterns over key names.

- A **component** is a sub-model (`clip_l`, `vae`, `diffuser`). Inventory keys take the component
  their inventory groups them under; other keys the first component whose patterns match.
- A **block** is a unit of block-weighted merging (`BASE`, `IN04`, `L17`). A key belongs to the
  first block whose patterns match (blocks are tried in the order they are listed, which is also
  the block-weight order); a block marked `default` takes the keys no other block matches.
- A **class** is a kind of layer (`attn2`, `norm`, `q`); a key can have several.

Patterns are globs over the whole key (`*` crosses dots) with two placeholders: `{n}` (a decimal
number) and `{path}` (the shortest dotted prefix that lets the rest match). A block whose name
contains a placeholder (`L{n}`, `{path}.{n}`) is *open*: its concrete blocks come from the keys of
a file (`Arch.blocks_for(keys)`, `Arch.specialize(keys)`). A block with `range = [a, b]` is
expanded into one block per number when the architecture is built (`IN{n:02}` with
`input_blocks.{n}.*`).

Nothing here imports torch.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence


@dataclass(frozen=True)
class KeyInfo:
    key: str
    component: str | None
    block: str | None
    classes: frozenset[str]


@dataclass(frozen=True)
class KeySpec:
    shape: tuple[int, ...]
    dtype: str                  # safetensors name: F32, F16, BF16, I64, ...
    optional: bool
    aliases: tuple[str, ...]


@dataclass(frozen=True)
class PatternSet:
    """One named component, block or class. `name` may be a template (`IN{n:02}`, `L{n}`)."""

    name: str
    patterns: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    default: bool = False
    range: tuple[int, int] | None = None   # expand `{n}` over start..end (both included)


class ArchError(Exception):
    """An architecture definition that does not make sense."""

    def __init__(self, message: str, source: str | None = None):
        self.message = message
        self.source = source
        super().__init__(f"{source}: {message}" if source else message)


# ------------------------------------------------------------------------------------------------
# Patterns

_PLACEHOLDER = re.compile(r"\{(n|path)(:[^}]*)?\}")


def glob_to_regex(pattern: str) -> str:
    """A glob (`*`, `?`, `[...]`, `{n}`, `{path}`) as a regular expression matching a whole key."""
    out: list[str] = []
    i, n = 0, len(pattern)
    seen: set[str] = set()
    while i < n:
        c = pattern[i]
        if c == "*":
            out.append(".*")
        elif c == "?":
            out.append(".")
        elif c == "[":
            j = pattern.find("]", i + 2 if i + 1 < n and pattern[i + 1] in "!^" else i + 1)
            if j < 0:
                out.append(re.escape(c))
            else:
                body = pattern[i + 1:j]
                neg = body[:1] in ("!", "^")
                if neg:
                    body = body[1:]
                body = body.replace("\\", "\\\\")
                out.append(f"[{'^' if neg else ''}{body}]")
                i = j
        elif c == "{":
            m = _PLACEHOLDER.match(pattern, i)
            if m:
                which = m.group(1)
                if which in seen:
                    out.append(f"(?P={which})")
                else:
                    seen.add(which)
                    out.append(r"(?P<n>[0-9]+)" if which == "n" else r"(?P<path>.+?)")
                i = m.end() - 1
            else:
                out.append(re.escape(c))
        else:
            out.append(re.escape(c))
        i += 1
    return "".join(out)


def _alternation(patterns: Iterable[str]) -> re.Pattern | None:
    pats = list(patterns)
    if not pats:
        return None
    # Each alternative gets its own copy of the placeholder groups; rename them apart.
    parts = []
    for idx, p in enumerate(pats):
        rx = glob_to_regex(p)
        rx = rx.replace("(?P<n>", f"(?P<n_{idx}>").replace("(?P=n)", f"(?P=n_{idx})")
        rx = rx.replace("(?P<path>", f"(?P<path_{idx}>").replace("(?P=path)", f"(?P=path_{idx})")
        parts.append(f"(?:{rx})")
    return re.compile("(?:" + "|".join(parts) + r")\Z", re.DOTALL)


def _groups(m: re.Match) -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in m.groupdict().items():
        if v is not None:
            out.setdefault(k.rsplit("_", 1)[0], v)
    return out


def _name_regex(template: str) -> re.Pattern:
    out, pos = [], 0
    for m in _PLACEHOLDER.finditer(template):
        out.append(re.escape(template[pos:m.start()]))
        out.append(r"(?P<n>[0-9]+)" if m.group(1) == "n" else r"(?P<path>.+)")
        pos = m.end()
    out.append(re.escape(template[pos:]))
    return re.compile("".join(out) + r"\Z", re.DOTALL)


def _format_name(template: str, n: int | None = None, path: str | None = None) -> str:
    def sub(m: re.Match) -> str:
        if m.group(1) == "n":
            spec = (m.group(2) or ":")[1:]
            return format(n, spec) if n is not None else m.group(0)
        return path if path is not None else m.group(0)

    return _PLACEHOLDER.sub(sub, template)


def is_template(name: str) -> bool:
    return _PLACEHOLDER.search(name) is not None


class _Matcher:
    # Regexes are compiled on first use: `mecha check` builds every architecture but classifies
    # keys with only the few its models are, and compiling them all would dominate its start-up.
    __slots__ = ("name", "open", "_patterns", "_exclude", "_compiled", "default", "name_rx", "uses_path")

    def __init__(self, ps: PatternSet):
        self.name = ps.name
        self.open = is_template(ps.name)
        self._patterns = ps.patterns
        self._exclude = ps.exclude
        self._compiled: tuple | None = None
        self.default = ps.default
        self.name_rx = _name_regex(ps.name) if self.open else None
        self.uses_path = "{path" in ps.name

    @property
    def rx(self) -> re.Pattern | None:
        if self._compiled is None:
            self._compiled = (_alternation(self._patterns), _alternation(self._exclude))
        return self._compiled[0]

    @property
    def ex(self) -> re.Pattern | None:
        if self._compiled is None:
            self._compiled = (_alternation(self._patterns), _alternation(self._exclude))
        return self._compiled[1]

    def match(self, key: str) -> str | None:
        """The (concrete) name this entry gives `key`, or None."""
        if self.rx is None:
            return None
        m = self.rx.match(key)
        if m is None or (self.ex is not None and self.ex.match(key)):
            return None
        if not self.open:
            return self.name
        g = _groups(m)
        n = int(g["n"]) if "n" in g else None
        return _format_name(self.name, n, g.get("path"))


def _expand(sets: Sequence[PatternSet], what: str) -> list[PatternSet]:
    out = []
    for ps in sets:
        if ps.range is None:
            out.append(ps)
            continue
        start, end = ps.range
        if start > end:
            raise ArchError(f"{what} `{ps.name}`: range [{start}, {end}] is reversed")
        if "{n" not in ps.name:
            raise ArchError(f"{what} `{ps.name}` has a range but its name has no `{{n}}`")
        for k in range(start, end + 1):
            out.append(PatternSet(
                _format_name(ps.name, k),
                tuple(_format_name(p, k) for p in ps.patterns),
                tuple(_format_name(p, k) for p in ps.exclude),
                ps.default,
            ))
    return out


# ------------------------------------------------------------------------------------------------
# The architecture


class Arch:
    """An architecture. Build one from Python with `PatternSet`s, or from a TOML file through
    `mechalang.archs.registry`."""

    def __init__(
        self,
        name: str,
        *,
        aliases: Sequence[str] = (),
        description: str = "",
        components: Sequence[PatternSet] = (),
        blocks: Sequence[PatternSet] = (),
        classes: Sequence[PatternSet] = (),
        inventory: Mapping[str, KeySpec] | None = None,
        inventory_components: Mapping[str, str] | None = None,
        mbw_blocks: Sequence[str] | bool = (),
        detect_require: Sequence[str] = (),
        detect_min_coverage: float = 0.9,
        source: str | None = None,
    ):
        self.name = name
        self.aliases = tuple(aliases)
        self.description = description
        self.source = source

        comp_sets = _expand(components, "component")
        block_sets = _expand(blocks, "block")
        class_sets = _expand(classes, "class")
        for what, sets in (("component", comp_sets), ("class", class_sets)):
            for ps in sets:
                if is_template(ps.name):
                    raise ArchError(f"{what} `{ps.name}`: only blocks can have numbered names")
        for what, sets in (("component", comp_sets), ("block", block_sets), ("class", class_sets)):
            defaults = [ps.name for ps in sets if ps.default]
            if len(defaults) > 1:
                raise ArchError(f"more than one default {what}: {', '.join(defaults)}")
            if what == "class" and defaults:
                raise ArchError(f"class `{defaults[0]}` cannot be a default")
            for ps in sets:
                if not ps.patterns and not ps.default:
                    raise ArchError(f"{what} `{ps.name}` has no patterns")
                if ps.default and is_template(ps.name):
                    raise ArchError(f"default {what} `{ps.name}` cannot have a numbered name")

        # Inventory, aliases
        self.inventory: dict[str, KeySpec] | None = dict(inventory) if inventory is not None else None
        self._inv_component: dict[str, str] = dict(inventory_components or {})
        self._alias: dict[str, str] = {}
        if self.inventory is not None:
            for key, spec in self.inventory.items():
                for a in spec.aliases:
                    if a in self.inventory:
                        continue  # a real key of its own wins over an alias
                    self._alias.setdefault(a, key)

        # Names
        comp_names = [ps.name for ps in comp_sets]
        for c in dict.fromkeys(self._inv_component.values()):
            if c not in comp_names:
                comp_names.append(c)
        self.components: tuple[str, ...] = tuple(comp_names)
        self.classes: tuple[str, ...] = tuple(dict.fromkeys(ps.name for ps in class_sets))

        self._comp_m = [_Matcher(ps) for ps in comp_sets if not ps.default]
        self._comp_default = next((ps.name for ps in comp_sets if ps.default), None)
        self._block_m = [_Matcher(ps) for ps in block_sets]
        self._block_default = next((ps.name for ps in block_sets if ps.default), None)
        self._class_m = [_Matcher(ps) for ps in class_sets]

        self._static_blocks = tuple(m.name for m in self._block_m if not m.open)
        self.block_templates: tuple[str, ...] = tuple(m.name for m in self._block_m if m.open)
        #: block names and numbered templates (`L{n}`) in definition order
        self.block_entries: tuple[str, ...] = tuple(m.name for m in self._block_m)
        self.is_family: bool = bool(self.block_templates)
        self.specialized: bool = not self.is_family
        self.blocks: tuple[str, ...] = self._static_blocks
        self._block_pos = {b: i for i, b in enumerate(self.blocks)}

        seen: dict[str, str] = {}
        for kind, names in (("component", self.components), ("block", self._static_blocks),
                            ("class", self.classes)):
            for nm in names:
                if nm in seen:
                    if seen[nm] == kind:
                        raise ArchError(f"{kind} `{nm}` is defined twice")
                    raise ArchError(f"`{nm}` is both a {seen[nm]} and a {kind}: selectors could "
                                    f"not tell them apart")
                seen[nm] = kind

        if mbw_blocks is True:
            mbw = self._static_blocks
        elif mbw_blocks is False:
            mbw = ()
        else:
            mbw = tuple(mbw_blocks)
        for b in mbw:
            if b not in self._block_pos:
                raise ArchError(f"mbw_blocks names `{b}`, which is not a block")
        self.mbw_blocks: tuple[str, ...] = mbw

        self.detect_require: tuple[str, ...] = tuple(detect_require)
        self._detect_rx = [_alternation([p]) for p in self.detect_require]
        self.detect_min_coverage = float(detect_min_coverage)

        self._vocab = self._make_vocab()
        self._memo: dict[str, KeyInfo] = {}
        self._specialized_cache: dict[tuple[str, ...], Arch] = {}

    # -- identity -------------------------------------------------------------------------------

    def __repr__(self) -> str:
        extra = f", {len(self.blocks)} blocks" if self.specialized else ", unspecialized"
        return f"Arch({self.name!r}{extra})"

    def __eq__(self, other) -> bool:
        if not isinstance(other, Arch):
            return NotImplemented
        return self.name == other.name and self.blocks == other.blocks

    def __hash__(self) -> int:
        return hash((self.name, self.blocks))

    # -- keys -----------------------------------------------------------------------------------

    def canonical(self, key: str) -> str:
        """The inventory's name for `key` (an older alias resolved); other keys unchanged."""
        return self._alias.get(key, key)

    def classify(self, key: str) -> KeyInfo:
        info = self._memo.get(key)
        if info is None:
            info = self._classify(key)
            if len(self._memo) < 1_000_000:
                self._memo[key] = info
        return info

    def _classify(self, key: str) -> KeyInfo:
        ck = self._alias.get(key, key)
        component = self._inv_component.get(ck)
        if component is None:
            for m in self._comp_m:
                if m.match(ck) is not None:
                    component = m.name
                    break
            else:
                component = self._comp_default
        block = None
        for m in self._block_m:
            b = m.match(ck)
            if b is not None:
                block = b
                break
        else:
            block = self._block_default
        classes = frozenset(m.name for m in self._class_m if m.match(ck) is not None)
        return KeyInfo(key, component, block, classes)

    def expected_keys(self) -> set[str]:
        """Required inventory keys (canonical names); empty for pattern families."""
        if self.inventory is None:
            return set()
        return {k for k, s in self.inventory.items() if not s.optional}

    def component_of_inventory_key(self, key: str) -> str | None:
        return self._inv_component.get(self.canonical(key))

    # -- blocks ---------------------------------------------------------------------------------

    def block_index(self, name: str) -> int | None:
        """Position of block `name` in the block-weight order (None if not a block here)."""
        return self._block_pos.get(name)

    def block_sort_key(self, name: str) -> tuple | None:
        """An ordering key for block `name`, None when it is no block of this architecture. Works
        for numbered blocks of an unspecialized family too (`L3` < `L10`)."""
        if self.specialized:
            i = self._block_pos.get(name)
            return None if i is None else (i, "", -1)
        for i, m in enumerate(self._block_m):
            if not m.open:
                if m.name == name:
                    return (i, "", -1)
                continue
            mm = m.name_rx.match(name)
            if mm:
                g = mm.groupdict()
                return (i, g.get("path") or "", int(g["n"]) if g.get("n") is not None else -1)
        return None

    def is_block(self, name: str) -> bool:
        return self.block_sort_key(name) is not None

    def blocks_for(self, keys: Iterable[str]) -> tuple[str, ...]:
        """The blocks of a model with these keys, in order: the static blocks and the numbered
        blocks the keys have (numbered blocks sharing a `{path}` stay together, in the order the
        paths first appear, numbers ascending). Without open blocks, just `blocks`."""
        if not self.is_family:
            return self._static_blocks
        static = set(self._static_blocks)
        path_order: dict[str, int] = {}
        found: dict[str, tuple[int, int, int]] = {}
        for key in keys:
            b = self.classify(key).block
            if b is None or b in found or b in static:
                continue
            sk = self._open_sort_key(b)
            if sk is None:
                continue
            if sk[1] not in path_order:
                path_order[sk[1]] = len(path_order)
            found[b] = (sk[0], path_order[sk[1]], sk[2])
        items = [((i, -1, -1), m.name) for i, m in enumerate(self._block_m) if not m.open]
        items += [(sk, b) for b, sk in found.items()]
        return tuple(b for _, b in sorted(items))

    def _open_sort_key(self, name: str) -> tuple | None:
        for i, m in enumerate(self._block_m):
            if m.open:
                mm = m.name_rx.match(name)
                if mm:
                    g = mm.groupdict()
                    return (i, g.get("path") or "", int(g["n"]) if g.get("n") is not None else -1)
        return None

    def specialize(self, keys: Iterable[str]) -> "Arch":
        """This architecture with its numbered blocks taken from `keys` (a family such as llama:
        `L0..L31`); `self` when it has no numbered blocks."""
        if not self.is_family:
            return self
        blocks = self.blocks_for(keys)
        cached = self._specialized_cache.get(blocks)
        if cached is not None:
            return cached
        new = copy.copy(self)
        new.blocks = blocks
        new._block_pos = {b: i for i, b in enumerate(blocks)}
        new.specialized = True
        new._vocab = new._make_vocab()
        new._specialized_cache = {}
        new._memo = self._memo   # classification does not depend on the key set
        # a numbered block name must not collide with a component or class name
        names = set(self.components) | set(self.classes)
        for b in blocks:
            if b in names:
                raise ArchError(f"block `{b}` found in the keys is also a component or class name",
                                self.source)
        self._specialized_cache[blocks] = new
        return new

    # -- selectors ------------------------------------------------------------------------------

    def vocabulary(self) -> dict[str, str]:
        """Every selector name: component, block (concrete ones) or class."""
        return dict(self._vocab)

    def _make_vocab(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for c in self.components:
            out[c] = "component"
        for b in self.blocks:
            out[b] = "block"
        for c in self.classes:
            out[c] = "class"
        return out

    def kind_of(self, name: str) -> str | None:
        """"component", "block", "class" or None. Numbered blocks of an unspecialized family
        (`L7` of llama before its layer count is known) count as blocks."""
        kind = self._vocab.get(name)
        if kind is None and not self.specialized and self.is_block(name):
            return "block"
        return kind

    # -- detection support ----------------------------------------------------------------------

    def family_match(self, keys: Sequence[str]) -> tuple[int, int] | None:
        """For a family: (keys that fall in one of its blocks, keys that do not), or None when a
        required signature pattern matches no key or there are no patterns to test."""
        if not self.detect_require:
            return None
        for rx in self._detect_rx:
            if not any(rx.match(k) for k in keys):
                return None
        hit = 0
        for k in keys:
            info = self.classify(k)
            if info.block is not None and info.block != self._block_default:
                hit += 1
        return hit, len(keys) - hit
