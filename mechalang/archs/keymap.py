"""Which adapter module names update which checkpoint weights, in every LoRA dialect.

An adapter file (a LoRA, LyCORIS, ...) says which layer it changes by a *module name*, and each
tool spells that name its own way. For the SD1 checkpoint weight
`model.diffusion_model.input_blocks.1.1.proj_in.weight`:

- **native**: the key's own module path, `model.diffusion_model.input_blocks.1.1.proj_in`;
- **comfy** (ComfyUI): `diffusion_model.input_blocks.1.1.proj_in`; text encoders as ComfyUI's
  own state dict names them (`text_encoders.clip_l.transformer.text_model...`);
- **kohya** (sd-scripts, A1111, LyCORIS): `lora_unet_down_blocks_0_attentions_0_proj_in` (dots
  become underscores, and SD1's UNet is named by its diffusers paths);
- **diffusers** (diffusers, PEFT, ai-toolkit): `unet.down_blocks.0.attentions.0.proj_in`.

Some checkpoints fuse what adapters see as several modules into one tensor (OpenCLIP-G's
`attn.in_proj_weight` holds q, k and v; Flux's `single_blocks.N.linear1` holds q, k, v and the
MLP input): such a module updates a slice of rows of the fused weight (`ModuleTarget.rows`).

The facts are data, in `mechalang/stdlib/keymaps/<arch>.toml`, followed by `generic.toml` (alone for
architectures without a keymap of their own); this module reads and applies them. A keymap file:

    [[components]]                  # a sub-model: the checkpoint weights under one key prefix
    checkpoint = "model.diffusion_model."
    names = [                       # how each dialect spells a module of it
        { dialect = "kohya", prefix = "lora_unet_", paths = "unet" },
        { dialect = "diffusers", prefix = "unet.", paths = "unet" },
        { dialect = "kohya", prefix = "lora_transformer_", paths = "dit", export = false },
    ]

    [maps]                          # path translations: [checkpoint path, dialect path, options?]
    unet = [
        ["input_blocks.0.0", "conv_in"],
        ["input_blocks.{3i+j+1}.0", "down_blocks.{i=0..3}.resnets.{j=0..1}", { map = "resnet" }],
    ]
    dit = [
        ["double_blocks.{n}", "transformer_blocks.{n}", { map = "double" }],
    ]
    double = [
        ["img_attn.qkv[0:1]", "attn.to_q"],
        ["context_block.adaLN_modulation.1", "norm1_context.linear", { if = "context_block.attn.proj" }],
    ]

A module of a component is named `prefix` + its path, the path being the weight's module path
without the component's `checkpoint` prefix, translated through the map `paths` if one is given
(kohya then replaces every "." by "_"). A dialect may have several spellings: all are read; the
first one not marked `export = false` that names a weight is the one written.

A map rule replaces the longest checkpoint-path prefix (whole dotted segments) that some rule
matches; the rest of the path is kept as it is, or translated with the map named by `map` (then
it must be named there, or the weight has no name). In a rule, `{i=0..3}` repeats the rule for
i = 0, 1, 2, 3 (either side may declare), `{3i+j+1}` computes a number from declared variables,
and a bare undeclared `{n}` is a whole segment matching any number, copied to the other side. A
checkpoint path ending in `[a:b]` names rows a*w .. b*w of a fused weight, w being the weight's
dim 1 (its input size, the hidden size of every fused projection we know), `[a:]` up to the end:
rows follow the real shapes, so scaled-down test models map as well as full ones. The pieces of
a fused weight must tile its dim 0 exactly, or the weight is left unnamed in that spelling. `if`
names a module (relative to where the map was entered) that must exist as a weight for the rule
to apply, for layers whose meaning changes in a model's last block; `unless` one that must not
(a prefix may have two rules, `if = X` and `unless = X`). `as` says the dialect stores
the tensor in another form: "conv" (a linear [o, i] that the checkpoint stores as a 1x1
convolution [o, i, 1, 1]), "transpose" (a matrix stored transposed), "swap" (the two halves of
dim 0 in the other order); adapters never name such a weight (their delta would need the same
change), only whole-model mappings use them.

Maps several architectures share live in fragments (`_ldm_unet.toml`, files whose name starts
with `_`, never keymaps of their own), named by `include = ["_ldm_unet.toml"]`: a fragment holds
`[maps]` only, read as if they were written in the including file.

A keymap may also say how a diffusers pipeline folder holds the checkpoint (`[diffusers]`,
read by archs/diffusers_map.py): its pipeline classes, and per component folder the checkpoint
prefix and the map naming every key of it, weights, biases and parameters alike.

Weights are the keys ending in `.weight`, and OpenCLIP's `attn.in_proj_weight` (module path
`attn.in_proj`). Nothing here imports torch.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache, lru_cache
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore

KEYMAP_DIR = Path(__file__).resolve().parent.parent / "stdlib" / "keymaps"

#: The dialects, each with the separator it writes between path segments.
DIALECTS = {"native": ".", "comfy": ".", "kohya": "_", "diffusers": "."}

Rows = tuple[int, int]


class KeymapError(Exception):
    """A broken keymap file, with the file it is in."""

    def __init__(self, message: str, source: str):
        super().__init__(f"{source}: {message}")
        self.message = message
        self.source = source


@dataclass(frozen=True)
class ModuleTarget:
    key: str                    # checkpoint key of the weight updated
    rows: Rows | None           # [start, stop) of dim 0 this module fills in a fused weight, else None


# ------------------------------------------------------------------------------------------------
# Public API


def module_names(arch: str, keys: Mapping[str, Sequence[int]]) -> dict[str, tuple[ModuleTarget, ...]]:
    """Every module name an adapter may use for this checkpoint, in every dialect, with the
    weight(s) it updates. `keys` maps each canonical checkpoint key to its shape. An architecture
    without a keymap gets the generic rules only."""
    frozen = frozenset((k, tuple(v)) for k, v in keys.items())
    return dict(_module_names(_keymap_name(arch), frozen))


def module_pieces(arch: str, key: str, dialect: str,
                  keys: Mapping[str, Sequence[int]]) -> list[tuple[str, Rows | None]]:
    """The (module name, rows) of `dialect` that together cover weight `key`: one entry with rows
    None when the dialect names the weight whole, several when it splits a fused weight, none
    when it has no name for it (or `key` is not in `keys`)."""
    if dialect not in DIALECTS:
        raise ValueError(f"unknown adapter dialect `{dialect}` (expected one of: {', '.join(DIALECTS)})")
    if key not in keys or _module_path(key) is None:
        return []
    km = _load(_keymap_name(arch))
    for spelling, pieces in _key_names(km, key, keys, dialect):
        if spelling.export:
            return list(pieces)
    return []


def export_name(arch: str, key: str, dialect: str,
                keys: Mapping[str, Sequence[int]]) -> tuple[str, Rows | None] | None:
    """The module name under which `dialect` writes an adapter for weight `key`, with rows None;
    None when the dialect has no name for it. For a weight the dialect only names in pieces this
    is the first piece, with its rows: a caller seeing rows should ask `module_pieces` for all."""
    pieces = module_pieces(arch, key, dialect, keys)
    return pieces[0] if pieces else None


# ------------------------------------------------------------------------------------------------
# The model of a keymap file


@dataclass(frozen=True)
class _Rule:
    ckpt: str                           # checkpoint-side path prefix (free variables as {n})
    name: str                           # dialect-side path
    rows: tuple[int, int | None] | None  # [a:b] in units of the weight's dim 1
    map: str | None                     # the map for the rest of the path
    cond: str | None                    # a module that must exist for the rule to apply
    unless: str | None = None           # a module that must NOT exist for the rule to apply
    transform: str | None = None        # how the dialect stores it: "conv" | "transpose" | "swap"


@dataclass
class _Map:
    exact: dict[str, list[_Rule]]                          # concrete prefixes
    patterns: dict[str, tuple[re.Pattern, list[_Rule]]]    # prefixes with free {n} segments

    def match(self, path: str) -> tuple[int, list[tuple[_Rule, dict | None]]] | None:
        """The rules of the longest matching prefix (its length), concrete ones winning ties."""
        best, hits = -1, []
        end = len(path)
        while end > 0:
            rules = self.exact.get(path[:end])
            if rules:
                best, hits = end, [(r, None) for r in rules]
                break
            end = path.rfind(".", 0, end)
        for rx, rules in self.patterns.values():
            m = rx.match(path)
            if m and m.end() > best:
                best, hits = m.end(), [(r, m.groupdict()) for r in rules]
        return (best, hits) if hits else None


@dataclass(frozen=True)
class _Spelling:
    dialect: str
    prefix: str
    paths: str | None       # the map translating component paths, None: as they are
    export: bool


@dataclass(frozen=True)
class _Component:
    checkpoint: str
    names: tuple[_Spelling, ...]


@dataclass(frozen=True)
class DiffusersComponent:
    folder: str                 # the component's folder in a pipeline (`unet`, `text_encoder_2`)
    cls: str                    # its class in model_index.json (`UNet2DConditionModel`)
    checkpoint: str             # the checkpoint key prefix it holds
    paths: str | None           # the map naming its keys; None: as they are
    config: tuple[tuple[str, str, int], ...]  # (config field, tensor, dim) that must agree
    # A prefix of every key that some writers leave out (transformers 5 saves CLIPTextModel
    # without `text_model.`): read either way, written with it (every version loads that). With
    # `paths`, the map's names carry it.
    optional_prefix: str = ""
    # (config field, value, why): a config saying this is another architecture's component
    refuse: tuple[tuple[str, object, str], ...] = ()


@dataclass(frozen=True)
class DiffusersLayout:
    pipelines: tuple[str, ...]              # model_index.json `_class_name`s of this architecture
    components: tuple[DiffusersComponent, ...]


@dataclass
class _Keymap:
    components: list[_Component]
    maps: dict[str, _Map]
    diffusers: DiffusersLayout | None = None


# ------------------------------------------------------------------------------------------------
# Applying a keymap


def module_path(key: str) -> str | None:
    """The module a weight belongs to; None for keys that are not weights."""
    return _module_path(key)


def _module_path(key: str) -> str | None:
    """The module a weight belongs to; None for keys that are not weights."""
    if key.endswith(".weight"):
        return key[:-7]
    if key.endswith(".in_proj_weight"):  # nn.MultiheadAttention's fused q/k/v (OpenCLIP)
        return key[:-7]
    return None


def _key_names(km: _Keymap, key: str, keys: Mapping, dialect: str | None = None):
    """(spelling, pieces) for each spelling of `dialect` (all when None) naming weight `key`, in
    the keymap's order."""
    path = _module_path(key)
    shape = tuple(keys[key])
    out = []
    for comp in km.components:
        if not path.startswith(comp.checkpoint) or len(path) == len(comp.checkpoint):
            continue
        rel = path[len(comp.checkpoint):]
        translated: dict[str | None, list] = {}  # spellings sharing a map translate once
        for sp in comp.names:
            if dialect is not None and sp.dialect != dialect:
                continue
            if sp.paths not in translated:
                if sp.paths is None:
                    translated[None] = [(rel, None)]
                else:
                    def has(p: str, c: str = comp.checkpoint) -> bool:
                        return f"{c}{p}.weight" in keys
                    pieces = _translate(km, sp.paths, rel, has, "")
                    # a weight the dialect stores in another form has no adapter name
                    plain = [] if any(t for _, _, t in pieces) else [(p, r) for p, r, _ in pieces]
                    translated[sp.paths] = _rows(plain, shape)
            pieces = translated[sp.paths]
            if pieces:
                sep = DIALECTS[sp.dialect]
                out.append((sp, [(sp.prefix + (p if sep == "." else p.replace(".", sep)), r) for p, r in pieces]))
    return out


def _translate(km: _Keymap, map_name: str, path: str, has, base: str) -> list[tuple[str, tuple | None, str | None]]:
    """`path` through map `map_name`: (dialect path, rows spec, transform) pieces, [] when it has
    no name."""
    found = km.maps[map_name].match(path)
    if found is None:
        return []
    end, hits = found
    rest = path[end:]           # "" or ".more.segments"
    out: list[tuple[str, tuple | None, str | None]] = []
    for rule, groups in hits:
        if rule.cond is not None and not has(base + rule.cond):
            continue
        if rule.unless is not None and has(base + rule.unless):
            continue
        name = rule.name if groups is None else re.sub(r"\{(\w+)\}", lambda m, g=groups: g[m[1]], rule.name)
        if rule.map is not None:
            if rest:
                inner = _translate(km, rule.map, rest[1:], has, base + path[:end] + ".")
                out += [(f"{name}.{p}", r, t) for p, r, t in inner]
        elif rule.rows is not None:
            if not rest:        # a slice names a whole fused weight, never a module inside it
                out.append((name, rule.rows, rule.transform))
        else:
            out.append((name + rest, None, rule.transform if not rest else None))
    return out


def _rows(pieces: list[tuple[str, tuple | None]], shape: tuple[int, ...]) -> list[tuple[str, Rows | None]]:
    """Row specs made rows of the real shape; [] when they do not tile dim 0 exactly."""
    if all(r is None for _, r in pieces):
        return pieces
    if len(shape) < 2 or any(r is None for _, r in pieces):
        return []
    w, total = shape[1], shape[0]
    out = [(p, (a * w, total if b is None else b * w)) for p, (a, b) in pieces]
    pos = 0
    for _, (start, stop) in sorted(out, key=lambda x: x[1]):
        if start != pos or stop <= start:
            return []
        pos = stop
    return out if pos == total else []


@lru_cache(maxsize=8)
def _module_names(name: str, frozen: frozenset) -> dict[str, tuple[ModuleTarget, ...]]:
    km = _load(name)
    keys = dict(frozen)
    acc: dict[str, list[ModuleTarget]] = {}
    for key in sorted(keys):
        if _module_path(key) is None:
            continue
        for _, pieces in _key_names(km, key, keys):
            for n, rows in pieces:
                targets = acc.setdefault(n, [])
                t = ModuleTarget(key, rows)
                if t not in targets:
                    targets.append(t)
    return {n: tuple(ts) for n, ts in acc.items()}


# ------------------------------------------------------------------------------------------------
# Loading keymap files


@cache
def has_keymap(arch: str) -> bool:
    """Whether an architecture (name or alias) has a keymap of its own, beyond the generic rules."""
    return _keymap_name(arch) != "generic"


def _available() -> frozenset[str]:
    return frozenset(p.stem for p in KEYMAP_DIR.glob("*.toml") if not p.name.startswith("_"))


def _keymap_name(arch: str) -> str:
    """The keymap for an architecture name or alias; `generic` when it has none."""
    if arch in _available():
        return arch
    from .registry import get_arch  # late: loading every architecture costs, and aliases are rare here

    a = get_arch(arch)
    return a.name if a is not None and a.name in _available() else "generic"


@cache
def _load(name: str) -> _Keymap:
    """An architecture's keymap followed by the generic rules."""
    km = _Keymap([], {})
    for n in dict.fromkeys([name, "generic"]):
        _read(KEYMAP_DIR / f"{n}.toml", km)
    for comp in km.components:
        for sp in comp.names:
            if sp.paths is not None and sp.paths not in km.maps:
                raise KeymapError(f"no map `{sp.paths}` (used by {sp.dialect} `{sp.prefix}`)", name)
    for dc in km.diffusers.components if km.diffusers else ():
        if dc.paths is not None and dc.paths not in km.maps:
            raise KeymapError(f"no map `{dc.paths}` (used by the diffusers folder `{dc.folder}`)", name)
    for mname, m in km.maps.items():
        for rules in itertools.chain(m.exact.values(), (rs for _, rs in m.patterns.values())):
            for r in rules:
                if r.map is not None and r.map not in km.maps:
                    raise KeymapError(f"map `{mname}`: no map `{r.map}` (used by `{r.ckpt}`)", name)
    return km


_FILE_KEYS = {"description", "components", "maps", "diffusers", "include"}
_FRAGMENT_KEYS = {"description", "maps"}
_COMPONENT_KEYS = {"checkpoint", "names"}
_NAME_KEYS = {"dialect", "prefix", "paths", "export"}
_OPTION_KEYS = {"map", "if", "unless", "as"}
TRANSFORMS = ("conv", "transpose", "swap")
_DIFFUSERS_KEYS = {"pipelines", "components"}
_DIFFUSERS_COMPONENT_KEYS = {"folder", "class", "checkpoint", "paths", "config", "optional_prefix", "refuse"}


def _read(path: Path, km: _Keymap, fragment: bool = False) -> None:
    src = str(path)
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as e:
        raise KeymapError(f"cannot read keymap: {e.strerror or e}", src) from None
    except tomllib.TOMLDecodeError as e:
        raise KeymapError(f"not valid TOML: {e}", src) from None
    _no_unknown(data, _FRAGMENT_KEYS if fragment else _FILE_KEYS, "fragment: " if fragment else "", src)
    includes = data.get("include", [])
    if not isinstance(includes, list) or not all(isinstance(n, str) and n.startswith("_") for n in includes):
        raise KeymapError("`include` is a list of fragment file names (starting with `_`)", src)
    for name in includes:
        _read(path.parent / name, km, fragment=True)
    for comp in _list(data.get("components", []), "components", src):
        _no_unknown(comp, _COMPONENT_KEYS, "component ", src)
        ckpt = comp.get("checkpoint")
        if not isinstance(ckpt, str):
            raise KeymapError("a component needs `checkpoint` (a key prefix)", src)
        names = []
        for sp in _list(comp.get("names", []), f"component `{ckpt}`: names", src):
            _no_unknown(sp, _NAME_KEYS, f"component `{ckpt}`: ", src)
            dialect, prefix, paths = sp.get("dialect"), sp.get("prefix"), sp.get("paths")
            export = sp.get("export", True)
            if dialect not in DIALECTS:
                raise KeymapError(f"component `{ckpt}`: unknown dialect `{dialect}`", src)
            if not isinstance(prefix, str) or not (paths is None or isinstance(paths, str)) \
                    or not isinstance(export, bool):
                raise KeymapError(f"component `{ckpt}`: {dialect} needs `prefix` (a string), "
                                  f"`paths` (a map name) and `export` (true/false)", src)
            names.append(_Spelling(dialect, prefix, paths, export))
        km.components.append(_Component(ckpt, tuple(names)))
    if "diffusers" in data:
        if km.diffusers is not None:
            raise KeymapError("`[diffusers]` is given twice", src)
        km.diffusers = _read_diffusers(data["diffusers"], src)
    maps = data.get("maps", {})
    if not isinstance(maps, dict):
        raise KeymapError("`maps` must be a table of rule lists", src)
    for mname, rules in maps.items():
        if mname in km.maps:
            raise KeymapError(f"map `{mname}` is defined twice", src)
        km.maps[mname] = _build_map(mname, _list(rules, f"map `{mname}`", src, table=False), src)


def _read_diffusers(d, src: str) -> DiffusersLayout:
    if not isinstance(d, dict):
        raise KeymapError("`[diffusers]` must be a table", src)
    _no_unknown(d, _DIFFUSERS_KEYS, "[diffusers]: ", src)
    pipelines = d.get("pipelines", [])
    if not isinstance(pipelines, list) or not all(isinstance(p, str) for p in pipelines):
        raise KeymapError("[diffusers]: `pipelines` must be a list of class names", src)
    comps = []
    for c in _list(d.get("components", []), "diffusers.components", src):
        _no_unknown(c, _DIFFUSERS_COMPONENT_KEYS, "[[diffusers.components]]: ", src)
        folder, cls, ckpt, paths = c.get("folder"), c.get("class"), c.get("checkpoint"), c.get("paths")
        if not all(isinstance(v, str) for v in (folder, cls, ckpt)) or not (paths is None or isinstance(paths, str)):
            raise KeymapError("[[diffusers.components]] needs `folder`, `class` and `checkpoint` (strings) and "
                              "`paths` (a map name) if its keys are renamed", src)
        config = c.get("config", [])
        if not isinstance(config, list) or not all(
                isinstance(r, list) and len(r) == 3 and isinstance(r[0], str) and isinstance(r[1], str)
                and isinstance(r[2], int) for r in config):
            raise KeymapError(f"[[diffusers.components]] `{folder}`: `config` is a list of [field, tensor, dim]", src)
        optional = c.get("optional_prefix", "")
        if not isinstance(optional, str):
            raise KeymapError(f"[[diffusers.components]] `{folder}`: `optional_prefix` is a string", src)
        refuse = c.get("refuse", [])
        if not isinstance(refuse, list) or not all(
                isinstance(r, list) and len(r) == 3 and isinstance(r[0], str) and isinstance(r[2], str) for r in refuse):
            raise KeymapError(f"[[diffusers.components]] `{folder}`: `refuse` is a list of [field, value, reason]", src)
        comps.append(DiffusersComponent(folder, cls, ckpt, paths, tuple(tuple(r) for r in config), optional,
                                        tuple(tuple(r) for r in refuse)))
    return DiffusersLayout(tuple(pipelines), tuple(comps))


def _build_map(mname: str, rules: list, src: str) -> _Map:
    m = _Map({}, {})
    for raw in rules:
        if not (isinstance(raw, list) and len(raw) in (2, 3) and all(isinstance(s, str) for s in raw[:2])
                and (len(raw) == 2 or isinstance(raw[2], dict))):
            raise KeymapError(f"map `{mname}`: a rule is [checkpoint path, dialect path] or "
                              f"[checkpoint path, dialect path, {{ map = ..., if = ... }}], not {raw!r}", src)
        opts = raw[2] if len(raw) == 3 else {}
        _no_unknown(opts, _OPTION_KEYS, f"map `{mname}`: ", src)
        if not all(isinstance(v, str) for v in opts.values()):
            raise KeymapError(f"map `{mname}`: rule {raw[0]!r}: options are names (strings)", src)
        try:
            expanded = _expand(raw[0], raw[1])
        except ValueError as e:
            raise KeymapError(f"map `{mname}`: rule {raw[0]!r}: {e}", src) from None
        for ckpt, name in expanded:
            rows = None
            s = re.fullmatch(r"(.+)\[(\d+):(\d*)\]", ckpt)
            if s:
                ckpt, rows = s[1], (int(s[2]), int(s[3]) if s[3] else None)
                if opts.get("map") or (rows[1] is not None and rows[1] <= rows[0]):
                    raise KeymapError(f"map `{mname}`: rule {raw[0]!r}: a row slice [a:b] needs a < b "
                                      f"and no `map`", src)
            if opts.get("as") is not None and (opts["as"] not in TRANSFORMS or opts.get("map")):
                raise KeymapError(f"map `{mname}`: rule {raw[0]!r}: `as` is one of {', '.join(TRANSFORMS)}, on a "
                                  f"rule without `map`", src)
            rule = _Rule(ckpt, name, rows, opts.get("map"), opts.get("if"), opts.get("unless"), opts.get("as"))
            free = re.findall(r"\{(\w+)\}", ckpt)
            if sorted(free) != sorted(re.findall(r"\{(\w+)\}", name)):
                raise KeymapError(f"map `{mname}`: rule {raw[0]!r}: a free {{n}} must appear once on "
                                  f"each side", src)
            if free:
                parts = ckpt.split(".")
                if any("{" in p and not re.fullmatch(r"\{\w+\}", p) for p in parts):
                    raise KeymapError(f"map `{mname}`: rule {raw[0]!r}: a free {{n}} must be a whole "
                                      f"segment", src)
                rx = r"\.".join(f"(?P<{p[1:-1]}>\\d+)" if p.startswith("{") else re.escape(p) for p in parts)
                slot = m.patterns.setdefault(ckpt, (re.compile(rx + r"(?=\.|$)"), []))[1]
            else:
                slot = m.exact.setdefault(ckpt, [])
            # Several rules for one prefix are the pieces of one fused weight, or two alternatives
            # of which exactly one applies (`if = X` and `unless = X`).
            exclusive = len(slot) == 1 and rows is None and slot[0].rows is None and (
                (rule.cond is not None and slot[0].unless == rule.cond)
                or (rule.unless is not None and slot[0].cond == rule.unless))
            if slot and not exclusive and (rows is None or any(r.rows is None for r in slot)):
                raise KeymapError(f"map `{mname}`: `{ckpt}` is mapped twice", src)
            slot.append(rule)
    return m


_BRACE = re.compile(r"\{([^{}]*)\}")
_DECL = re.compile(r"\s*([a-z]\w*)\s*=\s*(\d+)\s*\.\.\s*(\d+)\s*")
_TERM = re.compile(r"\s*([+-]?)\s*(?:(\d+)\s*\*?)?\s*([a-z]\w*)?\s*")


def _expand(left: str, right: str) -> list[tuple[str, str]]:
    """A rule with declared variables ({i=0..3}) as the concrete rules it stands for."""
    ranges: dict[str, range] = {}
    for m in _BRACE.finditer(left + right):
        d = _DECL.fullmatch(m[1])
        if d:
            if d[1] in ranges:
                raise ValueError(f"variable `{d[1]}` is declared twice")
            if int(d[2]) > int(d[3]):
                raise ValueError(f"empty range in {m[0]}")
            ranges[d[1]] = range(int(d[2]), int(d[3]) + 1)
    out = []
    for values in itertools.product(*ranges.values()):
        env = dict(zip(ranges, values))
        out.append((_subst(left, env), _subst(right, env)))
    return out


def _subst(text: str, env: dict[str, int]) -> str:
    def one(m: re.Match) -> str:
        body = m[1].strip()
        d = _DECL.fullmatch(body)
        if d:
            return str(env[d[1]])
        if re.fullmatch(r"[a-z]\w*", body) and body not in env:
            return "{" + body + "}"     # free: any number, matched when the map is applied
        return str(_evaluate(body, env))
    return _BRACE.sub(one, text)


def _evaluate(expr: str, env: dict[str, int]) -> int:
    """A sum of terms like `3i`, `3*i`, `j`, `1` (optionally subtracted)."""
    terms = re.findall(r"[+-]?[^+-]+", expr)
    total = 0
    for term in terms:
        m = _TERM.fullmatch(term)
        if not m or not (m[2] or m[3]):
            raise ValueError(f"cannot compute {{{expr}}}")
        if m[3] is not None and m[3] not in env:
            raise ValueError(f"undeclared variable `{m[3]}` in {{{expr}}}")
        value = (int(m[2]) if m[2] else 1) * (env[m[3]] if m[3] else 1)
        total += -value if m[1] == "-" else value
    if not terms:
        raise ValueError("empty {}")
    return total


def _list(v, what: str, src: str, table: bool = True) -> list:
    if not isinstance(v, list) or (table and not all(isinstance(x, dict) for x in v)):
        raise KeymapError(f"`{what}` must be a list" + (" of tables" if table else ""), src)
    return v


def _no_unknown(d: dict, allowed: set[str], where: str, src: str) -> None:
    unknown = sorted(set(d) - allowed)
    if unknown:
        raise KeymapError(f"{where}unknown field `{unknown[0]}` (expected one of: "
                          f"{', '.join(sorted(allowed))})", src)
