"""Built-in names: `model`, `mbw`, `key`, the merge methods, the architectures; and `param`."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from .. import paths
from ..archs import registry as arch_registry
from ..diagnostics import Span, codes, did_you_mean, error, warning
from ..dtypes import SUPPORTED_DTYPES
from ..graph.nodes import HyperRule, KeyMeta, LoadInfo
from ..syntax import ast
from .values import (
    POISON,
    UNRESOLVED,
    ArchValue,
    Builtin,
    HyperValue,
    ListValue,
    MethodValue,
    ModelValue,
    is_number,
    type_name,
)

SAFETENSORS_SUFFIXES = (".safetensors", ".sft")
MODEL_SUFFIXES = SAFETENSORS_SUFFIXES + (".ckpt", ".pt", ".pth", ".bin", ".json")


def builtin_names() -> set[str]:
    from ..methods.registry import REGISTRY

    return (set(_BUILTINS) | set(REGISTRY.names())
            | {n for n in arch_registry.all_selector_names() if n.isidentifier()})


def lookup_builtin(name: str) -> Any:
    if name in _BUILTINS:
        return _BUILTINS[name]
    from ..methods.registry import REGISTRY

    spec = REGISTRY.get(name)
    if spec is not None:
        return MethodValue(spec)
    arch = get_arch(name)
    if arch is not None:
        return ArchValue(arch)
    return None


def get_arch(name: str):
    """The architecture a recipe names (exactly as written: `sd1`, or an alias), or None.

    Looked up in the architecture registry each time, so one registered from Python after the
    first lookup is a known name."""
    return arch_registry.all_archs_by_name().get(name)


# ------------------------------------------------------------------------------------------------
# model(path, arch=, sha256=)


def file_call_args(ev, fname: str, e: ast.Call, args, kwargs, named: tuple[str, ...]):
    """The arguments of a builtin that reads a file, `fname(path, <named>=…)`: (path, its span,
    arch or None, sha256 or None), with `arch=` and `sha256=` checked; or POISON (reported)."""
    allowed = {"path", *named}
    usage = f"{fname}(path, {', '.join(n + '=' for n in named)})"
    for k, (_, s) in kwargs.items():
        if k not in allowed:
            sugg = did_you_mean(k, sorted(allowed))
            return ev.err(codes.NO_SUCH_KEYWORD, f"`{fname}` has no argument `{k}`", s,
                          help=f"did you mean `{sugg}`?" if sugg else usage)
    if len(args) > 1:
        return ev.err(codes.WRONG_ARGUMENT_COUNT, f"`{fname}` takes one path (and {', '.join(n + '=' for n in named)} "
                                                  f"by name)", e.span)
    path_v, path_span = args[0] if args else kwargs.get("path", (None, e.span))
    if path_v is POISON or any(v is POISON for v, _ in kwargs.values()):
        return POISON
    if not isinstance(path_v, str):
        found = type_name(path_v) if path_v is not None else "nothing"
        return ev.err(codes.WRONG_ARGUMENT_TYPE, f"`{fname}` needs a file path (a string), found {found}", path_span)
    arch = None
    if "arch" in kwargs:
        av, aspan = kwargs["arch"]
        if isinstance(av, str):
            found = get_arch(av)
            if found is None:
                sugg = did_you_mean(av, arch_registry.all_selector_names())
                return ev.err(codes.UNKNOWN_ARCH, f"unknown architecture `{av}`", aspan,
                              help=f"did you mean `{sugg}`?" if sugg else "see `mecha info`")
            av = ArchValue(found)
        if not isinstance(av, ArchValue):
            return ev.err(codes.UNKNOWN_ARCH, f"arch= needs an architecture such as `sd1`, found {type_name(av)}",
                          aspan)
        arch = av.arch
    sha = None
    if "sha256" in kwargs:
        sv, sspan = kwargs["sha256"]
        if not isinstance(sv, str) or not re.fullmatch(r"[0-9a-fA-F]{64}", sv):
            return ev.err(codes.BAD_SHA256, "sha256= needs 64 hexadecimal digits", sspan)
        sha = sv.lower()
    return path_v, path_span, arch, sha


def _model_builtin(ev, e: ast.Call, args, kwargs) -> Any:
    parsed = file_call_args(ev, "model", e, args, kwargs, ("arch", "sha256"))
    if parsed is POISON:
        return POISON
    path_v, path_span, arch, sha = parsed
    return load_model(ev, path_v, path_span, arch=arch, sha256=sha, base=ev.module_dir())


def find_model_file(ev, path: str, base: Path) -> tuple[Path | None, list[Path]]:
    """Where a model path a recipe names is: next to the recipe, then in the models folders. A
    name without a suffix is completed as sd-mecha and A1111 do, in each folder in turn:
    `ghostmix.safetensors`, `.ckpt`, `.pt`, `.bin`, then a model folder `ghostmix/`."""
    from ..sources import name_suffixes

    p = Path(path).expanduser()
    tried = [p] if p.is_absolute() else [base / p] + [Path(d) / p for d in ev.options.models_dirs]
    complete = not path.endswith(("/", "\\")) and not p.name.lower().endswith(MODEL_SUFFIXES)
    for c in tried:
        if complete:
            for suffix in name_suffixes():
                full = c.with_name(c.name + suffix)
                if paths.is_file(full):
                    return full, tried
        if paths.exists(c):
            return c, tried
    return None, tried


def open_file(ev, path: str, span: Span | None, what: str, base: Path):
    """(the path, its source: sources.Source) for a model or adapter path a recipe names, or POISON
    with the reason reported: an unusable path, not found (where it looked), not a readable model
    source (the file at fault named), or tensors of a dtype mechalang cannot compute with."""
    from ..modules import display_name
    from ..sources import SourceError, open_source

    problem = paths.path_problem(path)
    if problem:
        return ev.err(codes.MODEL_NOT_FOUND, f"the {what} path {problem}", span, label="not a usable path")
    found, tried = find_model_file(ev, path, base)
    if found is None:
        return ev.err(codes.MODEL_NOT_FOUND, f"no such {what} file `{path}`", span, label="not found",
                      help="looked in: " + ", ".join(display_name(t) for t in tried)
                           + "; --models-dir or MECHA_MODELS_DIR add a folder")
    try:
        header = open_source(str(found))
    except SourceError as exc:
        where = "" if Path(exc.path) == found or Path(exc.path) == found.resolve() else \
            f"{display_name(Path(exc.path))}: "
        return ev.err(codes.MODEL_UNREADABLE, f"cannot read `{path}`: {where}{exc.message}", span,
                      label="this file")
    unsupported = [(k, m.dtype) for k, m in header.tensors.items() if m.dtype not in SUPPORTED_DTYPES]
    if unsupported:
        kinds = sorted({d for _, d in unsupported})
        shown = ", ".join(f"`{k}` ({d})" for k, d in unsupported[:3])
        more = f" and {len(unsupported) - 3} more" if len(unsupported) > 3 else ""
        return ev.err(codes.UNSUPPORTED_DTYPE,
                      f"`{path}` has {len(unsupported)} tensor{'s' if len(unsupported) != 1 else ''} of a dtype "
                      f"mechalang cannot compute with ({', '.join(kinds)}): {shown}{more}", span,
                      label="this file", help="supported: " + ", ".join(sorted(SUPPORTED_DTYPES)))
    return found, header


def load_model(ev, path: str, span: Span | None, *, arch=None, sha256: str | None = None,
               base: Path | None = None) -> Any:
    from ..archs.detect import describe_poor_match, detect

    if paths.path_problem(path) is None and ev.options.defer_missing_models:
        found, _ = find_model_file(ev, path, base or Path.cwd())
        if found is None:
            info = LoadInfo(path, Path(path).stem, None, (), sha256, deferred=True)
            node = ev.builder.node("load", (), space="weight", arch=arch or UNRESOLVED, keys={}, load=info,
                                   origin=span)
            return ModelValue(node)
    opened = open_file(ev, path, span, "model", base or Path.cwd())
    if opened is POISON:
        return POISON
    found, header = opened
    from ..kinds.adapter import dialect_of, is_adapter

    if is_adapter(header.tensors):  # an adapter read as a model would merge its factors as weights
        return ev.err(codes.MODEL_IS_ADAPTER, f"`{path}` is an adapter ({dialect_of(header.tensors)} names), "
                                              f"not a model", span, label="an adapter",
                      help=f'read it with lora("{path}", base=...) and add it to a model: base + lora(...)')
    if arch is None and getattr(header, "arch", None):
        # the source's layout says (a diffusers pipeline's class): its keys were named by that
        # architecture's layout, and W0204 below still says if most are unknown to it
        arch = get_arch(header.arch)
    if arch is None:
        det = detect(header)
        best = det.best
        matches_nothing = det.arch.name == "generic" and (best is None or best.matched < 0.25 * max(1, det.n_keys))
        # DESIGN.md §3: a file that matches nothing is `generic`; a partial match is reported.
        if not det.confident and not matches_nothing:
            return ev.err(codes.ARCH_UNDETECTED, f"cannot tell the architecture of `{path}`", span,
                          notes=[describe_poor_match(det)],
                          help="if you know it, say it: model(\"...\", arch=sd1)")
        arch = det.arch
    if hasattr(arch, "specialize") and getattr(arch, "inventory", None) is None:
        arch = arch.specialize(list(header.tensors))
    keys: dict[str, KeyMeta] = {}
    file_keys: list[tuple[str, str]] = []
    for k, meta in header.tensors.items():
        c = arch.canonical(k)
        if c in keys:
            continue
        keys[c] = KeyMeta(meta.dtype, tuple(meta.shape))
        file_keys.append((c, k))
    if getattr(arch, "inventory", None):
        known = sum(1 for c in keys if c in arch.inventory)
        if known < len(keys) / 2:
            ev.report(warning(codes.FEW_KNOWN_KEYS, f"`{path}` has {len(keys) - known} of {len(keys)} keys that "
                                       f"{arch.name} does not know", span,
                              help="is arch= right? `mecha info` lists the architectures"))
        else:
            _report_rank_mismatch(ev, path, arch, keys, span)
    resolved = str(found.resolve())
    info = LoadInfo(resolved, _stem(found), header, tuple(file_keys), sha256)
    node = ev.builder.node("load", (), space="weight", arch=arch, keys=keys, load=info, origin=span)
    return ModelValue(node)


def _report_rank_mismatch(ev, path: str, arch, keys: dict, span) -> None:
    """W0283: keys with `arch`'s names but another architecture's tensor ranks."""
    from ..archs.detect import rank_mismatches, ranks_fit

    bad = rank_mismatches(arch, {k: m.shape for k, m in keys.items()})
    if not bad:
        return
    first = bad[0]
    want = list(arch.inventory[first].shape)
    others = ranks_fit({k: keys[k].shape for k in bad}, arch.name)
    note = (f"these shapes are {' or '.join(f'`{o}`' for o in others)}'s" if others
            else "no known architecture has these shapes")
    ev.report(warning(codes.RANK_MISMATCH,
                      f"`{path}` has {len(bad)} key{'s' if len(bad) != 1 else ''} shaped unlike {arch.name}'s: "
                      f"`{first}` is {list(keys[first].shape)}, {arch.name} has {len(want)} dimensions "
                      f"({want})", span, notes=[note],
                      help="is arch= right? otherwise the file mixes two architectures"))


def _stem(found: Path) -> str:
    """A model's name from its path: the file's stem, a folder's name (an index's folder's)."""
    if found.name.lower().endswith(".index.json"):
        return found.resolve().parent.name
    return found.stem if not found.is_dir() else found.resolve().name


# ------------------------------------------------------------------------------------------------
# mbw(arch, "…"), key(…)


def _mbw_builtin(ev, e: ast.Call, args, kwargs) -> Any:
    if kwargs or len(args) != 2:
        return ev.err(codes.WRONG_ARGUMENT_COUNT, "`mbw` takes an architecture and a string: mbw(sd1, \"0.5,0.3,...\")", e.span)
    (av, aspan), (sv, sspan) = args
    if av is POISON or sv is POISON:
        return POISON
    if isinstance(av, str) and get_arch(av) is not None:  # mbw("sd1", ...), as model(arch="sd1")
        av = ArchValue(get_arch(av))
    if not isinstance(av, ArchValue):
        return ev.err(codes.WRONG_ARGUMENT_TYPE, f"the first argument of `mbw` must be an architecture, found {type_name(av)}", aspan)
    if not isinstance(sv, str):
        return ev.err(codes.WRONG_ARGUMENT_TYPE, f"the second argument of `mbw` must be a string, found {type_name(sv)}", sspan)
    from .selectors import parse_mbw

    rules, diags = parse_mbw(av.arch, sv, sspan)
    for d in diags:
        ev.report(d)
    if any(d.is_error for d in diags):
        return POISON
    group = ev.new_group()
    return HyperValue(((av.arch.name, tuple(HyperRule(r.selector, r.value, r.span, group) for r in rules)),),
                      e.span)


def _key_builtin(ev, e: ast.Call, args, kwargs) -> Any:
    return ev.err(codes.KEY_OUTSIDE_MAP, "`key(...)` selects tensor keys on the left of a map entry", e.span,
                  help='use it inside a map: {key("*.proj_in.*"): 0.5}')




def select_component(ev, mv: ModelValue, comp: str, span: Span | None) -> Any:
    arch = mv.node.arch
    if comp not in arch.components and arch is not UNRESOLVED:
        sugg = did_you_mean(comp, list(arch.components))
        return ev.err(codes.NO_MEMBER, f"{arch.name} has no component `{comp}`", span,
                      help=f"did you mean `{sugg}`?" if sugg else f"its components: {', '.join(arch.components)}")
    keys = {k: m for k, m in mv.node.keys.items() if arch.classify(k).component == comp}
    node = ev.builder.node("select", (mv.node,), space=mv.node.space, arch=arch, keys=keys,
                           component=comp, origin=span)
    return ModelValue(node)


# ------------------------------------------------------------------------------------------------
# param name[: type] [= default], filled by --set name=value


def param_value(ev, stmt: ast.Param, env, mod, main: bool) -> Any:
    span = stmt.name_span or stmt.span
    if main:
        ev.params[stmt.name] = None
    given = ev.param_values[-1] if ev.param_values else {}
    if main and stmt.name in ev.options.sets:
        value = coerce_set(ev, stmt, ev.options.sets[stmt.name], span)
    elif stmt.name in given:
        value = given[stmt.name][0]
    elif stmt.default is not None:
        value = ev.eval(stmt.default, env)
    else:
        return ev.err(codes.PARAM_WITHOUT_VALUE, f"param `{stmt.name}` has no value", span, label="needs a value",
                      help=f"set it: --set {stmt.name}=VALUE")
    if stmt.type is not None and value is not POISON:
        from .annotations import check_annotation

        value = check_annotation(ev, stmt.type, value, span, f"param `{stmt.name}`")
    if main:
        ev.params[stmt.name] = value
    return value


def _default_type(default: Any) -> str | None:
    """The type an untyped param's default literal implies (`param out = "x.safetensors"` is a
    str: `--set out=y.safetensors` is a path, not a model to load)."""
    if isinstance(default, ast.String):
        return "str"
    if isinstance(default, ast.Bool):
        return "bool"
    if isinstance(default, ast.Number) or (isinstance(default, ast.UnaryOp) and isinstance(default.operand, ast.Number)):
        return "Hyper"  # a number, or a map given by --set's text
    if isinstance(default, ast.Call) and isinstance(default.func, ast.Name) and default.func.id == "model":
        return "Model"
    return None


def coerce_set(ev, stmt: ast.Param, raw: str, span: Span | None) -> Any:
    tname = stmt.type.name if stmt.type is not None else _default_type(stmt.default)
    where = f"--set {stmt.name}={raw}"

    def bad(expected: str) -> Any:
        return ev.err(codes.BAD_PARAM_VALUE, f"{where}: expected {expected}", span, label="param declared here")

    if tname == "list":  # --set ws=0.3,0.4 for `param ws: list[float]`
        from dataclasses import replace

        inner = replace(stmt, type=stmt.type.args[0] if stmt.type.args else None, default=None)
        items = [coerce_set(ev, inner, s.strip(), span) for s in raw.split(",")] if raw.strip() else []
        return POISON if any(v is POISON for v in items) else ListValue(tuple(items))

    if raw.lower().endswith(".mecha") and tname in (None, "Model", "Delta"):
        if paths.is_file(Path(raw)):
            ev.param_files[stmt.name] = Path(raw).resolve()
        return recipe_value(ev, raw, span)
    if tname in ("Model", "Delta") or (tname is None and raw.lower().endswith(MODEL_SUFFIXES[:-1])):
        return load_model(ev, raw, span, base=Path.cwd())
    if tname in ("float", "int", "Hyper") or tname is None:
        try:
            num = int(raw.replace("_", ""))
            return float(num) if tname == "float" else num
        except ValueError:
            pass
        except OverflowError:
            return bad("a number a float can hold")
        try:
            if tname == "int":
                return bad("a whole number")
            return float(raw)
        except ValueError:
            if tname is not None:
                return bad("a number")
    if tname in ("bool", None) and raw in ("true", "false"):
        return raw == "true"
    if tname == "bool":
        return bad("true or false")
    if tname == "Arch":
        a = get_arch(raw)
        return ArchValue(a) if a is not None else bad("an architecture name")
    return raw


def _recipe_builtin(ev, e: ast.Call, args, kwargs) -> Any:
    """`recipe("other.mecha", alpha=0.7)`: another recipe file's one export, as a value, with its
    params set by name. The path is found like an import's: next to this file, `std/...`, then
    `MECHA_PATH`."""
    if len(args) != 1:
        return ev.err(codes.WRONG_ARGUMENT_COUNT, "`recipe` takes one path, and param values by name",
                      e.span, help='recipe("other.mecha", alpha=0.5)')
    path_v, path_span = args[0]
    if path_v is POISON or any(v is POISON for v, _ in kwargs.values()):
        return POISON
    if not isinstance(path_v, str):
        return ev.err(codes.WRONG_ARGUMENT_TYPE, f"`recipe` needs a file path (a string), found {type_name(path_v)}",
                      path_span)
    importer = ev.current_module[-1] if ev.current_module and ev.current_module[-1] is not None else None
    path, diags = ev.loader.resolve(path_v, importer if importer is not None else Path.cwd() / "<recipe>", path_span)
    for d in diags:
        ev.report(d)
    if path is None:
        return POISON
    return recipe_value(ev, str(path), path_span, params=kwargs)


def recipe_value(ev, raw: str, span: Span | None, params: dict[str, tuple[Any, Span | None]] | None = None) -> Any:
    """A recipe file as a value: its one export, evaluated with `params` (name -> (value, span))
    set, the other params at their defaults."""
    problem = paths.path_problem(raw)
    if problem:
        return ev.err(codes.RECIPE_VALUE_NOT_FOUND, f"the recipe path {problem}", span)
    path = Path(raw)
    if not paths.is_file(path):
        return ev.err(codes.RECIPE_VALUE_NOT_FOUND, f"no such recipe `{raw}`", span)
    resolved = path.resolve()
    if resolved in ev.loading:
        chain = " → ".join(str(p.name) for p in ev.loading[ev.loading.index(resolved):] + [resolved])
        return ev.err(codes.IMPORT_CYCLE, f"recipe cycle: {chain}", span,
                      label="this recipe is already being evaluated")
    mod, diags = ev.loader.load_file(path, span)
    for d in diags:
        ev.report(d)
    if mod is None or mod.tree is None:
        return POISON
    exports = [s for s in mod.tree.statements if isinstance(s, ast.Export)]
    if len(exports) != 1:
        return ev.err(codes.RECIPE_VALUE_EXPORTS, f"a recipe used as a value must have exactly one export; `{raw}` has {len(exports)}",
                      span)
    params = params or {}
    declared = [s.name for s in mod.tree.statements if isinstance(s, ast.Param)]
    unknown = [name for name in params if name not in declared]
    for name in unknown:
        sugg = did_you_mean(name, declared)
        ev.err(codes.UNKNOWN_PARAM, f"`{raw}` has no param `{name}`", params[name][1] or span,
               help=f"did you mean `{sugg}`?" if sugg else
               (f"its params are: {', '.join(declared)}" if declared else "it declares no param"))
    if unknown:
        return POISON
    env = ev.eval_module(mod, main=False, param_values=params)
    if env is None:
        return POISON
    ev.current_module.append(mod.path)
    try:
        return ev.eval(exports[0].value, env)
    finally:
        ev.current_module.pop()


def _lora_builtin(ev, e: ast.Call, args, kwargs) -> Any:
    from .adapters import lora_builtin

    return lora_builtin(ev, e, args, kwargs)


# The builtin functions (methods and architectures are looked up in their registries).
_BUILTINS = {
    "lora": Builtin("lora", _lora_builtin),
    "model": Builtin("model", _model_builtin),
    "mbw": Builtin("mbw", _mbw_builtin),
    "key": Builtin("key", _key_builtin),
    "recipe": Builtin("recipe", _recipe_builtin),
}


__all__ = ["builtin_names", "lookup_builtin", "load_model", "select_component", "param_value",
           "is_number", "ListValue", "error"]
