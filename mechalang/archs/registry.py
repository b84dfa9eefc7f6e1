"""Loading architectures from TOML files: the bundled ones, then those on `MECHA_PATH`.

The TOML format (see `mechalang/stdlib/architectures/sd1.toml` for a full example):

```toml
name = "sd1"
aliases = ["sd15"]
description = "Stable Diffusion 1.x"
inventory = "sd1.json"            # key inventory, relative to this file (optional)
include = ["_unet_classes.toml"]  # fragments whose entries are appended to this file's
mbw_blocks = true                 # supermerger block-weight order = all blocks; or a list

[[components]]                    # first match wins; inventory keys use their inventory group
name = "vae"
patterns = ["first_stage_model.*"]

[[blocks]]                        # listed in block-weight order; first match wins
name = "BASE"
default = true                    # keys that no other block matches

[[blocks]]
name = "IN{n:02}"                 # expanded to IN01..IN11
range = [1, 11]
patterns = ["model.diffusion_model.input_blocks.{n}.*"]

[[blocks]]
name = "L{n}"                     # open: the numbers come from a file's keys (families)
patterns = ["model.layers.{n}.*"]

[[classes]]                       # every matching class applies
name = "attn2"
patterns = ["*.attn2.*"]
exclude = []

[detect]                          # families without an inventory
require = ["model.layers.*.self_attn.*"]   # each must match some key
min_coverage = 0.9                         # share of keys that must fall in a block
```

Files whose name starts with `_` are fragments for `include`, not architectures.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..dtypes import DTYPES, TORCH_TO_SAFETENSORS
from ..paths import mecha_path, mecha_path_key
from .arch import Arch, ArchError, KeySpec, PatternSet

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore

STDLIB_DIR = Path(__file__).resolve().parent.parent / "stdlib" / "architectures"

_TOP_KEYS = {"name", "aliases", "description", "inventory", "include", "mbw_blocks",
             "components", "blocks", "classes", "detect"}
_FRAGMENT_KEYS = {"components", "blocks", "classes", "include"}
_ENTRY_KEYS = {"name", "patterns", "exclude", "default", "range"}
_DETECT_KEYS = {"require", "min_coverage"}

_state: dict = {"key": None, "archs": None, "by_name": None}
_registered: list[Arch] = []


# ------------------------------------------------------------------------------------------------
# Public API


def get_arch(name: str) -> Arch | None:
    """The architecture called `name` (or one of its aliases), None if there is none."""
    by_name = _load()[1]
    arch = by_name.get(name)
    if arch is None:
        arch = by_name.get(name.lower())
    return arch


def all_archs() -> list[Arch]:
    return list(_load()[0])


def arch_names() -> list[str]:
    return [a.name for a in _load()[0]]


def all_archs_by_name() -> dict[str, Arch]:
    """Every architecture by its name and by each of its aliases (exact spelling)."""
    return _load()[1]


def all_selector_names() -> list[str]:
    """Names and aliases, for did-you-mean."""
    return list(_load()[1])


def reload() -> None:
    """Forget the loaded architectures (the next call reads the files again)."""
    _state.update(key=None, archs=None, by_name=None)


def register(arch: Arch) -> None:
    """Add an architecture built in Python (replaces one of the same name, also after a reload)."""
    _registered[:] = [a for a in _registered if a.name != arch.name] + [arch]
    archs, by_name = _load()
    _add(archs, by_name, arch)


def _add(archs: list[Arch], by_name: dict[str, Arch], arch: Arch) -> None:
    old = by_name.get(arch.name)
    if old is not None:  # a later definition replaces an earlier one of the same name
        archs.remove(old)
        for k in [k for k, v in by_name.items() if v is old]:
            del by_name[k]
    archs.append(arch)
    for n in (arch.name, *arch.aliases):
        by_name[n] = arch


def search_dirs() -> list[Path]:
    """Where architecture files come from, in load order (later definitions replace earlier)."""
    return [STDLIB_DIR, *mecha_path()]


# ------------------------------------------------------------------------------------------------
# Loading


def _load() -> tuple[list[Arch], dict[str, Arch]]:
    key = mecha_path_key()
    if _state["archs"] is not None and _state["key"] == key:
        return _state["archs"], _state["by_name"]
    archs: list[Arch] = []
    by_name: dict[str, Arch] = {}
    problems: list[ArchError] = []
    for path in _arch_files():
        try:
            _add(archs, by_name, load_arch_file(path))
        except ArchError as exc:  # a broken user file: reported by the commands, never a crash
            problems.append(exc)
    for arch in _registered:
        _add(archs, by_name, arch)
    _state.update(key=key, archs=archs, by_name=by_name, problems=problems)
    return archs, by_name


def load_problems() -> list[ArchError]:
    """The architecture files that could not be loaded (each left out), with why."""
    _load()
    return list(_state.get("problems") or [])


def _arch_files() -> list[Path]:
    files: list[Path] = []
    files += sorted(p for p in STDLIB_DIR.glob("*.toml") if not p.name.startswith("_"))
    for d in search_dirs()[1:]:
        if not d.is_dir():
            continue
        sub = d / "architectures"
        if sub.is_dir():
            files += sorted(p for p in sub.glob("*.toml") if not p.name.startswith("_"))
        else:
            # A library folder may hold unrelated TOML (pyproject.toml): only files that look
            # like architectures are read from the folder itself.
            for p in sorted(d.glob("*.toml")):
                if not p.name.startswith("_") and _looks_like_arch(p):
                    files.append(p)
    return files


def _looks_like_arch(path: Path) -> bool:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return False
    return any(marker in text for marker in ("[[blocks]]", "[[components]]", "[[classes]]",
                                             "inventory"))


def _read_toml(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except OSError as e:
        raise ArchError(f"cannot read architecture file: {e.strerror or e}", str(path)) from None
    except tomllib.TOMLDecodeError as e:
        raise ArchError(f"not valid TOML: {e}", str(path)) from None


def load_arch_file(path: str | os.PathLike) -> Arch:
    """Build the architecture a TOML file describes; `ArchError` naming the file if it is broken."""
    path = Path(path)
    src = str(path)
    data = _read_toml(path)
    unknown = sorted(set(data) - _TOP_KEYS)
    if unknown:
        raise ArchError(f"unknown field `{unknown[0]}` (expected one of: "
                        f"{', '.join(sorted(_TOP_KEYS))})", src)
    name = data.get("name")
    if not isinstance(name, str) or not name:
        raise ArchError("missing `name` (a string)", src)
    aliases = _str_list(data, "aliases", src)
    description = data.get("description", "")
    if not isinstance(description, str):
        raise ArchError("`description` must be a string", src)

    sections = {"components": [], "blocks": [], "classes": []}
    _collect_sections(data, path, sections, seen={path.resolve()})

    inventory = inv_components = None
    if "inventory" in data:
        inv = data["inventory"]
        if not isinstance(inv, str):
            raise ArchError("`inventory` must be a file name", src)
        try:
            inventory, inv_components = load_inventory(path.parent / inv)
        except ArchError as e:
            raise ArchError(f"inventory `{inv}` ({e.source}): {e.message}", src) from None

    mbw = data.get("mbw_blocks", [])
    if not (isinstance(mbw, bool) or (isinstance(mbw, list) and all(isinstance(b, str) for b in mbw))):
        raise ArchError("`mbw_blocks` must be `true` or a list of block names", src)

    detect = data.get("detect", {})
    if not isinstance(detect, dict):
        raise ArchError("`detect` must be a table", src)
    unknown = sorted(set(detect) - _DETECT_KEYS)
    if unknown:
        raise ArchError(f"unknown field `detect.{unknown[0]}`", src)
    require = _str_list(detect, "require", src, "detect.require")
    min_cov = detect.get("min_coverage", 0.9)
    if not isinstance(min_cov, (int, float)) or isinstance(min_cov, bool) or not 0 <= min_cov <= 1:
        raise ArchError("`detect.min_coverage` must be a number from 0 to 1", src)
    try:
        return Arch(name, aliases=aliases, description=description,
                    components=sections["components"], blocks=sections["blocks"],
                    classes=sections["classes"], inventory=inventory,
                    inventory_components=inv_components, mbw_blocks=mbw,
                    detect_require=require, detect_min_coverage=min_cov, source=src)
    except ArchError as e:
        raise ArchError(e.message, src) from None


def _collect_sections(data: dict, path: Path, sections: dict, seen: set) -> None:
    src = str(path)
    for kind in ("components", "blocks", "classes"):
        entries = data.get(kind, [])
        if not isinstance(entries, list):
            raise ArchError(f"`{kind}` must be an array of tables (`[[{kind}]]`)", src)
        for i, e in enumerate(entries):
            sections[kind].append(_entry(e, kind, i, src))
    for inc in _str_list(data, "include", src):
        inc_path = (path.parent / inc)
        key = inc_path.resolve()
        if key in seen:
            raise ArchError(f"`include` of `{inc}` makes a cycle", src)
        if not inc_path.is_file():
            raise ArchError(f"included file `{inc}` does not exist", src)
        frag = _read_toml(inc_path)
        unknown = sorted(set(frag) - _FRAGMENT_KEYS)
        if unknown:
            raise ArchError(f"unknown field `{unknown[0]}` in a fragment (expected: "
                            f"{', '.join(sorted(_FRAGMENT_KEYS))})", str(inc_path))
        _collect_sections(frag, inc_path, sections, seen | {key})


def _entry(e, kind: str, i: int, src: str) -> PatternSet:
    what = kind[:-1] if kind != "classes" else "class"
    if not isinstance(e, dict):
        raise ArchError(f"{kind}[{i}] must be a table", src)
    unknown = sorted(set(e) - _ENTRY_KEYS)
    if unknown:
        raise ArchError(f"{what} {e.get('name', f'#{i}')!s}: unknown field `{unknown[0]}` "
                        f"(expected: {', '.join(sorted(_ENTRY_KEYS))})", src)
    name = e.get("name")
    if not isinstance(name, str) or not name:
        raise ArchError(f"{kind}[{i}] has no `name`", src)
    pats = _str_list(e, "patterns", src, f"{what} `{name}`: patterns")
    excl = _str_list(e, "exclude", src, f"{what} `{name}`: exclude")
    default = e.get("default", False)
    if not isinstance(default, bool):
        raise ArchError(f"{what} `{name}`: `default` must be true or false", src)
    rng = e.get("range")
    if rng is not None:
        if (not isinstance(rng, list) or len(rng) != 2
                or not all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in rng)):
            raise ArchError(f"{what} `{name}`: `range` must be [first, last] (numbers, both "
                            f"included)", src)
        rng = (rng[0], rng[1])
    return PatternSet(name, tuple(pats), tuple(excl), default, rng)


def _str_list(d: dict, key: str, src: str, what: str | None = None) -> list[str]:
    v = d.get(key, [])
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise ArchError(f"`{what or key}` must be a list of strings", src)
    return list(v)


def _inventory_cache_file(path: Path) -> Path | None:
    """Where a parsed inventory is cached: keyed by the JSON file's identity (path, size, mtime)."""
    import hashlib

    try:
        st = path.stat()
    except OSError:
        return None
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mechalang" / "inventories"
    ident = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}|1".encode()
    return base / (hashlib.sha1(ident).hexdigest() + ".pickle")


def load_inventory(path: str | os.PathLike) -> tuple[dict[str, KeySpec], dict[str, str]]:
    """An inventory JSON: (key → spec, key → component), keys in the file's order.

    Parsing and validating the JSON costs more than the rest of `mecha check`; the result is
    cached as a pickle beside the user's other caches and reused while the file is unchanged."""
    import pickle

    cache = _inventory_cache_file(Path(path))
    if cache is not None:
        try:
            with open(cache, "rb") as f:
                return pickle.load(f)
        except Exception:  # missing, stale format, unreadable: parse the JSON
            pass
    result = _parse_inventory(path)
    if cache is not None:
        try:
            cache.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache.with_suffix(f".{os.getpid()}.tmp")
            with open(tmp, "wb") as f:
                pickle.dump(result, f, protocol=pickle.HIGHEST_PROTOCOL)
            os.replace(tmp, cache)
        except OSError:
            pass  # a read-only home: no cache, same result
    return result


def _parse_inventory(path: str | os.PathLike) -> tuple[dict[str, KeySpec], dict[str, str]]:
    path = Path(path)
    src = str(path)
    try:
        with open(path, "rb") as f:
            doc = json.load(f)
    except FileNotFoundError:
        raise ArchError("inventory file does not exist", src) from None
    except OSError as e:
        raise ArchError(f"cannot read inventory: {e.strerror or e}", src) from None
    except json.JSONDecodeError as e:
        raise ArchError(f"inventory is not valid JSON: {e}", src) from None
    comps = doc.get("components") if isinstance(doc, dict) else None
    if not isinstance(comps, dict):
        raise ArchError("inventory has no `components` object", src)
    specs: dict[str, KeySpec] = {}
    owner: dict[str, str] = {}
    for comp, keys in comps.items():
        if not isinstance(keys, dict):
            raise ArchError(f"inventory component `{comp}` is not an object", src)
        for key, v in keys.items():
            if not isinstance(v, dict) or "shape" not in v or "dtype" not in v:
                raise ArchError(f"inventory key `{key}` needs `shape` and `dtype`", src)
            shape = v["shape"]
            if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
                raise ArchError(f"inventory key `{key}` has an invalid shape", src)
            dtype = v["dtype"]
            st = TORCH_TO_SAFETENSORS.get(dtype, dtype if dtype in DTYPES else None)
            if st is None:
                raise ArchError(f"inventory key `{key}` has unknown dtype `{dtype}`", src)
            aliases = v.get("aliases", [])
            if not isinstance(aliases, list) or not all(isinstance(a, str) for a in aliases):
                raise ArchError(f"inventory key `{key}`: `aliases` must be a list of strings", src)
            if key in specs:
                raise ArchError(f"inventory key `{key}` is listed twice", src)
            specs[key] = KeySpec(tuple(shape), st, bool(v.get("optional", False)), tuple(aliases))
            owner[key] = comp
    return specs, owner
