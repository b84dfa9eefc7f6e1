"""Calls of registered merge methods: argument binding, spaces, architectures, hyperparameters."""

from __future__ import annotations

from typing import Any

from ..diagnostics import Label, Span, codes, did_you_mean, error
from ..graph.keys import node_keys
from ..graph.nodes import BoundHyper, KeyMeta
from ..methods.registry import Delta, HyperKind, MethodSpec, Same, Weight
from ..syntax import ast
from .values import POISON, UNRESOLVED, HyperValue, ModelValue, is_number, type_name


def _space_word(space: str) -> str:
    return "Model" if space == "weight" else "Delta"


def call_method(ev, spec: MethodSpec, e: ast.Call, args: list[tuple[Any, Span | None]],
                kwargs: dict[str, tuple[Any, Span | None]]) -> Any:
    fixed = len(spec.models)
    if spec.variadic is None:
        model_args, extra = args[:fixed], args[fixed:]
    else:
        model_args, extra = args, []
    # Positional values past the models bind hyperparameters in order (`weighted_sum(a, b, 0.3)`).
    hyper_args: dict[str, tuple[Any, Span | None]] = {}
    for (v, s), hp in zip(extra, spec.hypers):
        hyper_args[hp.name] = (v, s)
    if len(extra) > len(spec.hypers) or any(isinstance(v, ModelValue) for v, _ in extra):
        if any(isinstance(v, ModelValue) for v, _ in extra):
            n = sum(1 for v, _ in args if isinstance(v, ModelValue))
            return ev.err(codes.WRONG_ARGUMENT_COUNT, f"`{spec.name}` takes {fixed} model{'s' if fixed != 1 else ''}, {n} given",
                          e.span, help=f"signature: {spec.signature()}")
        return ev.err(codes.WRONG_ARGUMENT_COUNT, f"`{spec.name}` takes {fixed} model{'s' if fixed != 1 else ''}"
                               f"{' and ' + str(len(spec.hypers)) + ' hyperparameters' if spec.hypers else ''}, "
                               f"{len(args)} arguments given", e.span, help=f"signature: {spec.signature()}")
    n = len(model_args)
    if n < spec.min_models or (spec.max_models is not None and n > spec.max_models):
        if spec.max_models == spec.min_models:
            want = f"{spec.min_models}"
        elif spec.max_models is None:
            want = f"at least {spec.min_models}"
        else:
            want = f"{spec.min_models} to {spec.max_models}"
        plural = "" if want in ("1", "at least 1") else "s"
        return ev.err(codes.WRONG_ARGUMENT_COUNT, f"`{spec.name}` takes {want} model{plural}, {n} given",
                      e.span, help=f"signature: {spec.signature()}")

    params = list(spec.models) + ([spec.variadic] * max(0, n - fixed) if spec.variadic else [])
    models: list[tuple[ModelValue, Span | None]] = []
    same_space: str | None = None
    poisoned = False
    for (v, s), p in zip(model_args, params):
        if v is POISON:
            poisoned = True
            continue
        if not isinstance(v, ModelValue):
            ev.err(codes.WRONG_ARGUMENT_TYPE, f"`{p.name}` of `{spec.name}` must be a model, found {type_name(v)}", s,
                   help=(f"hyperparameters are passed by name: `{spec.hypers[0].name}=...`" if spec.hypers
                         else f"`{spec.name}` takes no hyperparameters")
                   if is_number(v) or isinstance(v, HyperValue) else None)
            poisoned = True
            continue
        space = v.node.space
        if p.space == Weight and space != "weight":
            ev.err(codes.WRONG_SPACE, f"`{p.name}` of `{spec.name}` must be a Model, found {v.node.type_name}", s,
                   label="a difference of models", help="add it to a base model: `base + delta`")
            poisoned = True
        elif p.space == Delta and space != "delta":
            ev.err(codes.WRONG_SPACE, f"`{p.name}` of `{spec.name}` must be a Delta (a difference of models), "
                            f"found {v.node.type_name}", s, help="subtract a base model: `model - base`")
            poisoned = True
        elif p.space == Same:
            if same_space is None:
                same_space = space
            elif space != same_space:
                ev.err(codes.MIXED_SPACES, f"`{spec.name}` needs its models all in one space: found "
                                f"{_space_word(same_space)} and {_space_word(space)}", s,
                       help="pass only models, or only differences of models")
                poisoned = True
        models.append((v, s))
    for name, (v, s) in kwargs.items():
        if spec.hyper(name) is None:
            if name == spec.key_param:
                ev.err(codes.NO_SUCH_KEYWORD, f"`{name}` of `{spec.name}` is not given by recipes: mecha "
                                              "passes each tensor's key name there", s)
                poisoned = True
                continue
            sugg = did_you_mean(name, [h.name for h in spec.hypers])
            ev.err(codes.NO_SUCH_KEYWORD, f"`{spec.name}` has no hyperparameter `{name}`", s,
                   help=f"did you mean `{sugg}`?" if sugg else
                   (f"its hyperparameters are: {', '.join(h.name for h in spec.hypers)}" if spec.hypers
                    else f"`{spec.name}` takes no hyperparameters"))
            poisoned = True
        elif name in hyper_args:
            ev.err(codes.ARGUMENT_TWICE, f"`{name}` is given twice (by position and by name)", s)
            poisoned = True
    if poisoned or not models:
        return POISON
    arch = ev.unify_arch(models, f"`{spec.name}`", e.span)
    if arch is None:
        return POISON
    from .operators import shape_check

    checked = shape_check(ev, models, e.span)
    if checked is None:
        return POISON
    models = [(m, s) for m, (_, s) in zip(checked, models)]
    keys = node_keys(spec.name, [m.node.space for m, _ in models], [m.node.keys for m, _ in models])
    hypers: list[tuple[str, BoundHyper]] = []
    for hp in spec.hypers:  # every problem is reported, not just the first
        given = kwargs.get(hp.name) or hyper_args.get(hp.name)
        if given is None:
            if hp.required:
                ev.err(codes.MISSING_HYPERPARAMETER, f"`{spec.name}` needs a value for `{hp.name}` ({hp.kind.describe()})", e.span)
                poisoned = True
            continue  # the method's default applies; lowering fills it in
        bound = bind_hyper(ev, hp.kind, given[0], given[1], arch, keys, f"`{hp.name}` of `{spec.name}`")
        if bound is None:
            poisoned = True
            continue
        hypers.append((hp.name, bound))
    if poisoned:
        return POISON
    ret = spec.returns
    space = same_space if ret == Same else ("weight" if ret == Weight else "delta")
    node = ev.builder.node(spec.name, tuple(m.node for m, _ in models), space=space or "weight", arch=arch,
                           keys=keys, hypers=tuple(hypers), origin=e.span)
    return ModelValue(node)


def bind_hyper(ev, kind: HyperKind, v: Any, span: Span | None, arch: Any, keys: dict[str, KeyMeta],
               what: str) -> BoundHyper | None:
    """Check a hyperparameter value against its kind and the models' architecture."""
    if v is POISON:
        return None
    if isinstance(v, (bool, int, float, str)):
        why = kind.check(v)
        if why is not None:
            ev.err(codes.HYPER_OUT_OF_RANGE, f"{what}: {why}", span)
            return None
        return BoundHyper(scalar=v, span=span)
    if not isinstance(v, HyperValue):
        ev.err(codes.HYPER_WRONG_TYPE, f"{what} must be a {kind.type} or a hyperparameter map, found {type_name(v)}", span)
        return None
    if arch is UNRESOLVED:  # the models' files are not found yet: the map is checked at merge time
        rules = v.for_arch(arch.name) or v.variants[0][1]
        return BoundHyper(rules=tuple(rules), span=span)
    rules = v.for_arch(arch.name)
    if rules is None:
        ev.report(error(codes.MAP_FOR_OTHER_ARCH, f"{what}: this map is for {', '.join(v.arch_names)}, the models are {arch.name}",
                        span, help=f"build the map for {arch.name}, e.g. `mbw({arch.name}, \"...\")`"))
        return None
    from .selectors import check_selector, rule_diagnostics

    ok = True
    seen = set()
    for r in rules:
        if r.selector in seen:
            continue
        seen.add(r.selector)
        for d in check_selector(r.selector, arch):
            ev.report(d)
            ok = ok and not d.is_error
    for r in rules:
        why = kind.check(r.value)
        if why is not None:
            ev.err(codes.HYPER_OUT_OF_RANGE, f"{what}: {why}", r.span)
            ok = False
    if not ok:
        return None
    # Errors (a rule selecting nothing) over all rules; "never wins" warnings only among rules
    # written together: overriding a preset's rule with `with` or `|` is the point, not a mistake.
    for d in rule_diagnostics(list(rules), arch, keys):
        if d.is_error:
            ev.report(d)
            ok = False
    for group in dict.fromkeys(r.group for r in rules):
        for d in rule_diagnostics([r for r in rules if r.group == group], arch, keys):
            if not d.is_error:
                ev.report(d)
    if not ok:
        return None
    return BoundHyper(rules=tuple(rules), span=span)


__all__ = ["call_method", "bind_hyper", "Label"]
