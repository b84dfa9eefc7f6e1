"""From sd-mecha instructions to a mechalang module: names for the results, hyperparameter maps from
`dict` lines, and methods renamed to their mechalang spelling."""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from pathlib import Path, PureWindowsPath

from ...diagnostics import Diagnostic, Label, Span, codes, did_you_mean, error, warning
from ...syntax import ast
from .lines import _IDENT, Arg, Instr, Value, _Reader
from .tables import (
    _TEXT_LAYERS,
    ARCHES,
    COMPONENT_FILTERS,
    COMPONENTS,
    LEGACY_ARCHES,
    LORA_ARCHES,
    METHOD_SIGNATURES,
    METHODS,
    MODEL_SUFFIXES,
    RESERVED,
    SINGLETON_CONFIG,
    MethodMap,
    unsupported_help,
)

# ------------------------------------------------------------------------------------------------
# From instructions to a mechalang module


@dataclass
class _Node:
    """What one instruction means."""

    instr: Instr
    kind: str  # "model" | "merge" | "map" | "scalar" | "alias" | "bad"
    target: int | None = None  # for "alias": the instruction it stands for
    uses: int = 0
    first_use: str | None = None  # keyword (or parameter name) it is first given to
    name: str | None = None  # its `let` name, when it has one
    fused: bool = False  # a `subtract` folded into `add_difference(a, b, c)`
    expr: ast.Expr | None = None  # how later instructions refer to it
    value: ast.Expr | None = None  # its full expression (for `let` or the export)
    extra: dict = field(default_factory=dict)


class _Builder:
    def __init__(self, reader: _Reader):
        self.r = reader
        self.file = reader.file
        self.diags = reader.diags
        self.nodes: list[_Node] = []
        self.used_names: set[str] = set(RESERVED)
        self.counters: dict[str, int] = {}

    # -- pass 1: what each instruction is, references checked ------------------------------------

    def classify(self) -> None:
        total = len(self.r.instrs)
        self.singletons = _singleton_dicts(self.r.instrs)
        for ins in self.r.instrs:
            node = _Node(ins, "bad")
            self.nodes.append(node)
            if not ins.ok:
                continue
            refs_ok = True
            for arg in ins.args:
                if arg.value.kind == "ref" and not self.check_ref(arg.value, ins, total):
                    refs_ok = False
            if not refs_ok:
                continue
            node.kind = {"model": "model", "merge": "merge", "dict": "map", "literal": "scalar",
                         "lora": "model", "parameter": "param"}[ins.kind]
            if ins.kind == "dict" and ins.index in self.singletons:
                self.shape_singleton(node)
                continue
            getattr(self, "shape_" + ins.kind)(node)

    def check_ref(self, v: Value, ins: Instr, total: int) -> bool:
        n = v.value
        if n < ins.index:
            return True
        if n == ins.index:
            self.diags.append(error(codes.SDMECHA_FORWARD_REFERENCE, f"`&{n}` refers to its own line", v.span,
                                    label="an instruction cannot use its own result",
                                    help="references name earlier instructions only"))
        elif n < total:
            target = self.r.instrs[n]
            self.diags.append(error(
                codes.SDMECHA_FORWARD_REFERENCE, f"`&{n}` refers to a later line", v.span,
                label=f"instruction {n} comes after this one",
                secondary=[Label(target.span, f"instruction &{n} is here")],
                help="references name earlier instructions only; move that line up"))
        else:
            last = f"&0 to &{total - 1}" if total > 1 else "only &0"
            self.diags.append(error(
                codes.SDMECHA_REFERENCE_OUT_OF_RANGE, f"`&{n}` is out of range", v.span,
                label=f"there is no instruction {n}",
                help=f"this recipe has {total} instruction{'s' if total != 1 else ''} ({last}), "
                     "counted from the first line after `version`"))
        return False

    def resolve(self, n: int) -> int:
        while self.nodes[n].kind == "alias":
            n = self.nodes[n].target  # type: ignore[assignment]
        return n

    def leading_string(self, node: _Node, line_kind: str, what: str, example: str) -> bool:
        """Whether the line starts with a quoted string (E0908 when not)."""
        ins = node.instr
        pos = ins.positional
        if pos and pos[0].value.kind == "string":
            return True
        span = pos[0].span if pos else ins.kind_span
        self.bad(node, error(codes.SDMECHA_BAD_LINE, f"a `{line_kind}` line needs a {what} in quotes", span,
                             label=f"expected a {what}" if not pos else "not a string",
                             help=f"write `{example}`"))
        return False

    def shape_lora(self, node: _Node) -> None:
        """Pre-1.0 `lora "path"`: a LoRA, its architecture detected."""
        self.shape_model(node)
        if node.kind == "model":
            node.extra["lora"] = None

    def shape_parameter(self, node: _Node) -> None:
        """Pre-1.0 `parameter "name" "BASE" ["sd1"]`: a model given at merge time, a `param`."""
        if not self.leading_string(node, "parameter", "name", 'parameter "base" "BASE"'):
            return
        node.extra["param"] = node.instr.positional[0].value.value

    def shape_model(self, node: _Node) -> None:
        ins = node.instr
        pos = ins.positional
        if not self.leading_string(node, ins.kind, "path", f'{ins.kind} "path/to/model.safetensors"'):
            return
        extra: dict[str, Value] = {}
        names = ("model_arch", "model_type") if self.r.legacy else ("model_config", "merge_space")
        for i, arg in enumerate(pos[1:]):
            if i >= len(names):
                self.bad(node, error(codes.SDMECHA_BAD_LINE, "too many arguments for `model`", arg.span,
                                     label="unexpected argument",
                                     help=f'`model "PATH" {" ".join(n + "=..." for n in names)}`'))
                return
            extra[names[i]] = arg.value
        for arg in ins.keywords:
            if arg.name not in names:
                guess = did_you_mean(arg.name, names)
                self.bad(node, error(codes.SDMECHA_UNKNOWN_KEYWORD, f"unknown keyword `{arg.name}` for `model`",
                                     arg.name_span or arg.span, label="unknown keyword",
                                     help=f"did you mean `{guess}`?" if guess else
                                     f"`model` takes {names[0]}= and {names[1]}="))
                return
            if arg.name in extra:
                self.bad(node, self.duplicate(arg))
                return
            extra[arg.name] = arg.value
        for k, v in extra.items():
            if v.kind not in ("string", "null"):
                self.bad(node, error(codes.SDMECHA_NOT_A_STRING, f"`{k}` must be a string or null", v.span,
                                     label="expected a quoted name"))
                return
        node.extra = {"path": pos[0].value.value, **{k: v for k, v in extra.items()}}
        config = extra.get("model_config")
        if config is not None and config.value in LORA_ARCHES:
            node.extra["lora"] = LORA_ARCHES[config.value]  # type: ignore[index]
        kind = extra.get("model_type")
        if kind is not None and kind.kind == "string" and kind.value != "base":
            # pre-1.0 model types: "lora", "lycoris" (and per-architecture variants): adapters
            if str(kind.value).startswith(("lora", "lycoris")):
                node.extra["lora"] = None
            else:
                self.bad(node, error(codes.SDMECHA_UNSUPPORTED_METHOD, f"sd-mecha's model type `{kind.value}` has no "
                                     "exact mechalang equivalent", kind.span, label="not translated",
                                     help='mechalang reads full models with model("...") and LoRAs with lora("...")'))

    def shape_literal(self, node: _Node) -> None:
        ins = node.instr
        pos = ins.positional
        if len(pos) != 1:
            span = pos[1].span if len(pos) > 1 else ins.kind_span
            self.bad(node, error(codes.SDMECHA_BAD_LINE, "a `literal` line takes one value",
                                 span, label="unexpected argument" if pos else "expected a value",
                                 help='`literal VALUE model_config="..." merge_space="..."`'))
            return
        for arg in ins.keywords:
            if arg.name not in ("model_config", "merge_space"):
                self.bad(node, error(codes.SDMECHA_UNKNOWN_KEYWORD, f"unknown keyword `{arg.name}` for `literal`",
                                     arg.name_span or arg.span, label="unknown keyword",
                                     help="`literal` takes model_config= and merge_space="))
                return
        v = pos[0].value
        config = next((a.value for a in ins.keywords if a.name == "model_config"), None)
        if v.kind == "ref" and config is not None and config.value == SINGLETON_CONFIG:
            node.kind, node.target = "alias", v.value  # the one-key dict it wraps is the value
            return
        if v.kind == "null":
            self.bad(node, self.null(v))
        elif v.kind == "ref":
            node.kind, node.target = "alias", v.value
            blocks_of = _SUPERMERGER_BLOCKS.get(config.value) if config is not None else None  # type: ignore[arg-type]
            if blocks_of is not None:
                self.nodes[v.value].extra["blocks_of"] = blocks_of  # type: ignore[index]
        else:
            node.extra["value"] = v

    def shape_dict(self, node: _Node) -> None:
        ins = node.instr
        if ins.positional:
            self.bad(node, error(codes.SDMECHA_BAD_LINE, "a `dict` line takes only `key=value` pairs",
                                 ins.positional[0].span, label="expected `key=value`"))
            return
        seen: dict[str, Arg] = {}
        for arg in ins.keywords:
            if arg.name in seen:
                self.bad(node, self.duplicate(arg))
                return
            seen[arg.name] = arg
            if arg.value.kind == "null":
                self.bad(node, self.null(arg.value))
                return

    def shape_merge(self, node: _Node) -> None:
        ins = node.instr
        pos = ins.positional
        if not self.leading_string(node, "merge", "method name", 'merge "weighted_sum" &0 &1 alpha=0.5'):
            return
        method = pos[0].value.value
        advice = unsupported_help(method)
        if advice is not None:
            self.bad(node, error(
                codes.SDMECHA_UNSUPPORTED_METHOD, f"sd-mecha's `{method}` has no exact mechalang equivalent",
                pos[0].span, label="not translated", help=advice,
                notes=["mechalang does not run a recipe with a method whose results would differ "
                       "from sd-mecha's"]))
            return
        if method.startswith("convert_") and _CONVERSION.fullmatch(method):
            pass  # sd-mecha's conversions between configs: `convert_'sd1-kohya'_to_'sd1-ldm'`
        elif not _IDENT.fullmatch(method):
            self.bad(node, error(codes.SDMECHA_BAD_LINE, f"`{method}` is not a method name", pos[0].span,
                                 label="expected a name like weighted_sum"))
            return
        seen: set[str] = set()
        for arg in ins.keywords:
            if arg.name in seen:
                self.bad(node, self.duplicate(arg))
                return
            seen.add(arg.name)
            if not _IDENT.fullmatch(arg.name):
                self.bad(node, error(codes.SDMECHA_BAD_LINE, f"`{arg.name}` is not a parameter name",
                                     arg.name_span or arg.span, label="expected a name"))
                return
        node.extra["method"] = method
        sig = METHOD_SIGNATURES.get(method)
        args = pos[1:]
        if sig is not None and sig[1] is None and len(args) > len(sig[0]) + len(sig[2]):
            allowed = len(sig[0]) + len(sig[2])
            self.bad(node, error(codes.SDMECHA_TOO_MANY_ARGUMENTS, f"too many arguments for `{method}`",
                                 args[allowed].span, label="unexpected argument",
                                 help=f"`{method}` takes {allowed} positional argument"
                                      f"{'s' if allowed != 1 else ''}: {', '.join(sig[0] + sig[2])}"))
            return
        for arg in args:
            if arg.value.kind == "null":
                self.bad(node, self.null(arg.value))
                return
        node.kind = "merge"
        by_position = self.param_names(node)
        for i, pname in by_position.items():
            given = next((a for a in ins.keywords if a.name == pname), None)
            if given is not None:
                self.bad(node, error(
                    codes.SDMECHA_ARGUMENT_TWICE, f"`{pname}` is given twice", given.name_span or given.span,
                    label="given again here",
                    secondary=[Label(ins.args[i].span, f"`{pname}` was given here, by position")],
                    help="give each hyperparameter once"))
                return
        if method.startswith("convert_") and len(args) == 1 and not ins.keywords \
                and args[0].value.kind == "ref":
            node.kind, node.target = "alias", args[0].value.value
            node.extra["conversion"] = True

    def shape_singleton(self, node: _Node) -> None:
        """`dict key=V` wrapped by a `singleton-mecha` literal: sd-mecha 1.x's scalar V."""
        ins = node.instr
        if ins.positional or [a.name for a in ins.keywords] != ["key"]:
            span = ins.args[0].span if ins.args else ins.kind_span
            self.bad(node, error(
                codes.SDMECHA_BAD_SINGLETON, "a `singleton-mecha` value is a `dict` with one `key=`", span,
                label="expected `dict key=VALUE`",
                help="sd-mecha writes a scalar hyperparameter as `dict key=0.5`, then a `literal` "
                     'with model_config="singleton-mecha"'))
            return
        node.kind = "scalar"
        node.extra["value"] = ins.keywords[0].value

    def duplicate(self, arg: Arg) -> Diagnostic:
        return error(codes.SDMECHA_ARGUMENT_TWICE, f"`{arg.name}` is given twice", arg.name_span or arg.span,
                     label="given again here", help="give each keyword once")

    def null(self, v: Value) -> Diagnostic:
        return error(codes.SDMECHA_NULL_NOT_ALLOWED, "`null` cannot be used here", v.span, label="expected a value",
                     help="mechalang has no null; leave the argument out to use the default")

    def bad(self, node: _Node, d: Diagnostic) -> None:
        node.kind = "bad"
        self.diags.append(d)

    # -- pass 2: uses, fusions, names -----------------------------------------------------------

    def count_uses(self) -> None:
        for node in self.nodes:
            if node.kind in ("bad", "alias"):
                continue
            ins = node.instr
            params = self.param_names(node)
            for i, arg in enumerate(ins.args):
                if arg.value.kind != "ref":
                    continue
                t = self.nodes[self.resolve(arg.value.value)]
                t.uses += 1
                if t.first_use is None:
                    t.first_use = arg.name or params.get(i)
        for node in self.nodes:
            if node.kind == "alias" and node.extra.get("conversion"):
                t = self.nodes[self.resolve(node.target)]
                if t.kind == "model" and "lora" in t.extra:
                    continue  # `lora(...)` applies the LoRA to its base's keys, as sd-mecha's conversion does
                if t.kind in ("model", "merge"):
                    self.diags.append(warning(
                        codes.SDMECHA_CONVERSION_DROPPED, f"conversion `{node.extra['method']}` of a model is left out",
                        node.instr.span,
                        label="mechalang reads the model as it is",
                        help="mechalang finds a file's layout from its header; check the "
                             "architecture with `mecha check`"))

    def param_names(self, node: _Node) -> dict[int, str]:
        """Argument index (in `instr.args`) → sd-mecha parameter name, for merge hyperparameters."""
        if node.kind != "merge":
            return {}
        sig = METHOD_SIGNATURES.get(node.extra["method"])
        out: dict[int, str] = {}
        if sig is None or sig[1] is not None:
            return out
        j = 0
        for i, arg in enumerate(node.instr.args):
            if arg.name is not None:
                continue
            if j >= 1:  # positional 0 is the method name
                k = j - 1 - len(sig[0])
                if 0 <= k < len(sig[2]):
                    out[i] = sig[2][k]
            j += 1
        return out

    def fuse(self) -> None:
        """`add_difference(a, subtract(b, c), alpha)` with the subtraction used once →
        mechalang's three-model `add_difference(a, b, c, alpha=...)`."""
        for node in self.nodes:
            if node.kind != "merge" or node.extra["method"] != "add_difference":
                continue
            models = [a for a in node.instr.positional[1:]]
            if len(models) < 2 or models[1].value.kind != "ref":
                continue
            sub = self.nodes[self.resolve(models[1].value.value)]
            if (sub.kind == "merge" and sub.extra["method"] == "subtract" and sub.uses == 1
                    and len(sub.instr.positional) == 3 and not sub.instr.keywords
                    and sub is not self.nodes[-1]):
                sub.fused = True
                node.extra["fused"] = sub

    def fuse_component_filters(self) -> None:
        """`fallback(pick_component(x, "diffuser"), y)`, the filter used once → a per-component
        choice between x and y: `weighted_sum(y, x, alpha={default: 0, diffuser: 1})` (and
        `{default: 1, vae: 0}` for `omit_component`); with α 0 or 1 it is x or y exactly."""
        for node in self.nodes:
            if node.kind != "merge" or node.extra["method"] != "fallback":
                continue
            args = node.instr.positional[1:]
            if len(args) != 2 or node.instr.keywords or args[0].value.kind != "ref":
                continue
            sub = self.nodes[self.resolve(args[0].value.value)]
            if sub.kind != "merge" or sub.extra["method"] not in COMPONENT_FILTERS or sub.uses != 1:
                continue
            comp = self.component_of(sub)
            if comp is not None and sub is not self.nodes[-1]:
                sub.fused = True
                node.extra["component"] = (sub, comp)

    def component_of(self, node: _Node) -> str | None:
        """The mechalang component a `pick_component`/`omit_component` line names, if plain."""
        args = [a for a in node.instr.args[1:] if a.name in (None, "component")]
        if len(args) != 2:
            return None
        v = args[1].value
        if v.kind == "ref":
            target = self.nodes[self.resolve(v.value)]
            if target.kind != "scalar":
                return None
            v = target.extra["value"]
        return COMPONENTS.get(v.value) if v.kind == "string" else None  # type: ignore[arg-type]

    def assign_names(self) -> None:
        last = self.resolve(len(self.nodes) - 1) if self.nodes else None
        for i, node in enumerate(self.nodes):
            if node.kind in ("bad", "alias", "scalar") or node.fused:
                continue
            if i == last and node.uses == 0:
                continue  # exported as it is
            if node.uses == 0:
                self.diags.append(warning(
                    codes.SDMECHA_UNUSED_RESULT, "this instruction's result is never used", node.instr.span,
                    label=f"&{i} is not referenced by any later line",
                    help="it is kept as a `let`; only the last line is the recipe's result"))
            if node.kind == "model":
                node.name = self.fresh(_stem_name(node.extra["path"]), numbered=False)
            elif node.kind == "param":
                node.name = self.fresh(_stem_name(node.extra["param"]), numbered=False)
            elif node.kind == "map":
                node.name = self.fresh(node.first_use or "hyper")
            else:
                node.name = self.fresh(self.mecha_method(node.extra["method"]))

    def fresh(self, base: str, numbered: bool = True) -> str:
        if not numbered:
            name = base if base not in RESERVED else base + "_model"
            n = 1
            cand = name
            while cand in self.used_names:
                n += 1
                cand = f"{name}_{n}"
            self.used_names.add(cand)
            return cand
        n = self.counters.get(base, 0)
        while True:
            n += 1
            cand = f"{base}_{n}"
            if cand not in self.used_names:
                break
        self.counters[base] = n
        self.used_names.add(cand)
        return cand

    @staticmethod
    def mecha_method(method: str) -> str:
        m = METHODS.get(method)
        return m.name if m is not None else method

    # -- pass 3: expressions ------------------------------------------------------------------------

    def build_exprs(self) -> None:
        for node in self.nodes:
            if node.kind in ("bad", "alias") or self.is_null_scalar(node):
                continue
            try:
                value = getattr(self, "expr_" + node.kind)(node)
            except _Skip:
                node.kind = "bad"
                continue
            node.value = value
            if node.name is not None:
                node.expr = ast.Name(node.name, span=node.instr.span)
            else:
                node.expr = value

    @staticmethod
    def is_null_scalar(node: _Node) -> bool:
        return node.kind == "scalar" and node.extra["value"].kind == "null"

    def is_null(self, v: Value) -> bool:
        """`null`, written or through a `singleton-mecha` value: sd-mecha's "unset"."""
        if v.kind == "null":
            return True
        return v.kind == "ref" and self.is_null_scalar(self.nodes[self.resolve(v.value)])

    def ref_expr(self, v: Value) -> ast.Expr:
        """The expression `&N` stands for, placed at the reference (a name, or a number or string
        written where it is used)."""
        node = self.nodes[self.resolve(v.value)]
        if self.is_null_scalar(node):
            self.diags.append(self.null(v))
            raise _Skip()
        if node.kind == "bad" or node.expr is None:
            raise _Skip()
        return _respan(node.expr, v.span)

    def value_expr(self, v: Value) -> ast.Expr:
        if v.kind == "ref":
            return self.ref_expr(v)
        if v.kind == "number":
            return _number(v.value, v.span)  # type: ignore[arg-type]
        if v.kind == "string":
            return ast.String(v.value, span=v.span)  # type: ignore[arg-type]
        if v.kind == "bool":
            return ast.Bool(v.value, span=v.span)  # type: ignore[arg-type]
        raise _Skip()

    def expr_scalar(self, node: _Node) -> ast.Expr:
        return self.value_expr(node.extra["value"])

    def expr_model(self, node: _Node) -> ast.Expr:
        span = node.instr.span
        kwargs: list[ast.Keyword] = []
        config = node.extra.get("model_config")
        if config is not None and config.kind == "string":
            arch = ARCHES.get(config.value)  # type: ignore[arg-type]
            if arch is not None:
                kwargs.append(ast.Keyword("arch", ast.Name(arch, span=config.span), span=config.span))
            elif config.value not in LORA_ARCHES:
                self.diags.append(warning(
                    codes.SDMECHA_UNKNOWN_CONFIG, f"no mechalang architecture for sd-mecha's `{config.value}`",
                    config.span, label="left out",
                    help="the architecture is detected from the file's header; "
                         "`mecha info` lists the architectures mechalang knows"))
        space = node.extra.get("merge_space")
        if space is not None and space.kind == "string" and space.value != "weight":
            self.diags.append(warning(
                codes.SDMECHA_MERGE_SPACE, f"mechalang reads model files as weights, not `{space.value}`", space.span,
                label="this merge space is not kept",
                help="a difference of two models is written `a - b` in mechalang"))
        legacy_arch = node.extra.get("model_arch")
        if legacy_arch is not None and legacy_arch.kind == "string":
            arch = LEGACY_ARCHES.get(legacy_arch.value)  # type: ignore[arg-type]
            if arch is not None:
                kwargs.append(ast.Keyword("arch", ast.Name(arch, span=legacy_arch.span), span=legacy_arch.span))
            else:
                self.diags.append(warning(
                    codes.SDMECHA_UNKNOWN_CONFIG, f"no mechalang architecture for sd-mecha's `{legacy_arch.value}`",
                    legacy_arch.span, label="left out",
                    help="the architecture is detected from the file's header; "
                         "`mecha info` lists the architectures mechalang knows"))
        if node.extra.get("lora") is not None:  # an adapter: its delta, applied to the base it is added to
            kwargs = [ast.Keyword("arch", ast.Name(node.extra["lora"], span=config.span), span=config.span)]
        return ast.Call(ast.Name("lora" if "lora" in node.extra else "model", span=span),
                        (ast.String(node.extra["path"], span=node.instr.args[0].span),),
                        tuple(kwargs), span=span)

    def expr_param(self, node: _Node) -> ast.Expr:
        return ast.Name(node.name, span=node.instr.span)  # type: ignore[arg-type]

    def expr_map(self, node: _Node) -> ast.Expr:
        groups: dict[int, list[ast.MapEntry]] = {0: [], 1: [], 2: [], 3: []}
        for arg in node.instr.keywords:
            order, sel, warn = _selector(arg.name, arg.name_span or arg.span)  # type: ignore[arg-type]
            if warn:
                self.diags.append(warning(codes.SDMECHA_KEY_AS_SELECTOR, warn, arg.name_span or arg.span,
                                          label="written as a key selector",
                                          help="check which tensors it should select"))
            v = arg.value
            if v.kind == "ref":
                target = self.nodes[self.resolve(v.value)]
                if target.kind != "scalar":
                    self.diags.append(error(
                        codes.SDMECHA_BAD_DICT_VALUE, "a `dict` value must be a number, a string or a boolean", v.span,
                        label=f"&{v.value} is a {_kind_word(target.kind)}",
                        secondary=[Label(target.instr.span, "defined here")]))
                    raise _Skip()
            groups[order].append(ast.MapEntry(sel, self.value_expr(v), span=arg.span))
            if arg.name == "BASE" and node.extra.get("blocks_of"):
                # sd-mecha's block conversions give the UNet's time (and label) embedding BASE's
                # value; mechalang's block convention puts them in IN00
                for glob in _EMBEDDINGS[node.extra["blocks_of"]]:
                    groups[3].append(ast.MapEntry(ast.SelKey(glob, span=arg.name_span or arg.span),
                                                  self.value_expr(v), span=arg.span))
        return ast.HyperMap(tuple(e for k in sorted(groups) for e in groups[k]), span=node.instr.span)

    def expr_merge(self, node: _Node) -> ast.Expr:
        ins = node.instr
        span = ins.span
        method = node.extra["method"]
        params = self.param_names(node)
        positional: list[ast.Expr] = []
        hypers: list[tuple[str, ast.Expr, Arg]] = []
        for i, arg in enumerate(ins.args):
            if i in params and self.is_null(arg.value):
                continue  # sd-mecha's "unset": the mechalang default applies
            if arg.name is None:
                if i == 0:
                    continue
                if i in params:
                    hypers.append((params[i], self.value_expr(arg.value), arg))
                else:
                    positional.append(self.value_expr(arg.value))
            elif self.is_null(arg.value):
                continue  # sd-mecha's "unset": the mechalang default applies
            else:
                hypers.append((arg.name, self.value_expr(arg.value), arg))
        if method not in METHOD_SIGNATURES:
            for i, arg in enumerate(ins.positional[1:], 1):
                if arg.value.kind != "ref" or self.nodes[self.resolve(arg.value.value)].kind in ("scalar", "map"):
                    self.diags.append(warning(
                        codes.SDMECHA_UNKNOWN_HYPER, f"cannot tell which hyperparameter of `{method}` this is", arg.span,
                        label="kept as a positional argument",
                        help="mechalang passes hyperparameters by name: write it as `NAME=...`"))
                    break

        if method == "subtract" and len(positional) == 2 and not hypers:
            return ast.BinOp("-", positional[0], positional[1], span=span)
        if method in COMPONENT_FILTERS and node.fused:
            return positional[0]  # stands for nothing: the `fallback` above reads the line itself
        if method in COMPONENT_FILTERS:
            self.diags.append(error(
                codes.SDMECHA_UNSUPPORTED_METHOD, f"sd-mecha's `{method}` has no exact mechalang equivalent here",
                ins.args[0].span, label="not translated", help=COMPONENT_FILTERS[method],
                notes=["mechalang translates it only as the first argument of a `fallback`"]))
            raise _Skip()
        if method == "fallback" and "component" in node.extra:
            sub, comp = node.extra["component"]
            picked = _respan(self.value_expr(sub.instr.positional[1].value), ins.positional[1].span)
            on, off = ("1", "0") if sub.extra["method"] == "pick_component" else ("0", "1")
            sel_span = sub.instr.span
            alpha = ast.HyperMap((ast.MapEntry(ast.SelDefault(span=sel_span), ast.Number(off, span=sel_span),
                                               span=sel_span),
                                  ast.MapEntry(ast.SelName(comp, span=sel_span), ast.Number(on, span=sel_span),
                                               span=sel_span)), span=sel_span)
            return ast.Call(ast.Name("weighted_sum", span=span), (positional[1], picked),
                            (ast.Keyword("alpha", alpha, span=sel_span),), span=span)
        if method == "fallback" and len(positional) == 2 and not hypers:
            return ast.BinOp("|", positional[0], positional[1], span=span)
        if method == "scale" and len(positional) == 1 and all(n == "alpha" for n, _, _ in hypers):
            if not hypers or _is_one(hypers[0][1]):
                return positional[0]
            return ast.BinOp("*", hypers[0][1], positional[0], span=span)
        if method == "add_difference" and len(positional) == 2 and all(n == "alpha" for n, _, _ in hypers):
            alpha = hypers[0][1] if hypers else None
            sub: _Node | None = node.extra.get("fused")
            if sub is not None and sub.kind != "bad":
                at = ins.positional[2].span  # the `&N` naming the subtraction
                b, c = (_respan(self.value_expr(a.value), at) for a in sub.instr.positional[1:3])
                kw = (ast.Keyword("alpha", alpha, span=hypers[0][2].span),) if alpha is not None else ()
                return ast.Call(ast.Name("add_difference", span=span), (positional[0], b, c), kw,
                                span=span)
            delta, op = positional[1], "+"
            if isinstance(alpha, ast.UnaryOp) and alpha.op == "-":
                alpha, op = alpha.operand, "-"  # a + -0.5 * d  is  a - 0.5 * d
            if alpha is not None and not _is_one(alpha):
                delta = ast.BinOp("*", alpha, delta, span=span)
            return ast.BinOp(op, positional[0], delta, span=span)
        mm = METHODS.get(method) or MethodMap(method)
        if self.r.legacy:
            hypers = self.legacy_hypers(method, hypers, ins)
        kwargs: list[ast.Keyword] = []
        given = set()
        for n, (exact, _why, default) in mm.exact_only.items():
            if not any(g == n for g, _, _ in hypers) and default != exact:
                self.inexact(method, mm, n, default, ins.args[0].span)  # sd-mecha's default differs
        for n, e, a in hypers:
            given.add(n)
            untranslated = n in mm.values and mm.values[n].get(_plain_value(e), _MISSING) is _MISSING
            if n in mm.exact_only and not untranslated and not _same_value(e, mm.exact_only[n][0]):
                self.inexact(method, mm, n, _plain_value(e), a.span)
            if n in mm.drop_if_default and _same_value(e, mm.drop_if_default[n]):
                continue
            if n in mm.values:
                v = _plain_value(e)
                mapped = mm.values[n].get(v, _MISSING) if v is not _MISSING else _MISSING
                if mapped is _MISSING:
                    self.diags.append(warning(
                        codes.SDMECHA_UNTRANSLATED_ARGUMENT, f"cannot translate `{n}` of `{method}`", a.span,
                        label=f"mechalang's `{mm.renames.get(n, n)}` takes "
                              + " or ".join(f'"{x}"' if isinstance(x, str) else str(x)
                                            for x in mm.values[n].values()),
                        help="kept as written; set it by hand"))
                    kwargs.append(ast.Keyword(n, e, span=a.span, name_span=a.name_span))
                    continue
                e = _literal_expr(mapped, e.span)
            kwargs.append(ast.Keyword(mm.renames.get(n, n), e, span=a.span, name_span=a.name_span))
        for n, v in mm.fill.items():
            if not any(mm.renames.get(g, g) == n for g in given):
                kwargs.append(ast.Keyword(n, _literal_expr(v, span), span=span))
        names = [k.name for k in kwargs]
        for n, e, a in hypers:
            new_name = mm.renames.get(n, n)
            if new_name != n and names.count(new_name) > 1:
                self.diags.append(error(
                    codes.SDMECHA_ARGUMENT_TWICE, f"`{new_name}` is given twice", a.name_span or a.span,
                    label=f"sd-mecha's `{n}` is `{new_name}` in mechalang's `{mm.name}`",
                    help=f"`{new_name}` is not a parameter of sd-mecha's `{method}`"))
                raise _Skip()
        return ast.Call(ast.Name(mm.name, span=ins.args[0].span), tuple(positional), tuple(kwargs),
                        span=span)

    def inexact(self, method: str, mm: MethodMap, n: str, value: object, span: Span) -> None:
        shown = f"{n}={_show(value)}" if value is not _MISSING else f"this `{n}`"
        self.diags.append(error(
            codes.SDMECHA_UNSUPPORTED_METHOD, f"sd-mecha's `{method}` with {shown} has no exact mechalang equivalent",
            span, label="not translated", notes=[mm.exact_only[n][1]],
            help=f"write mechalang's `{mm.name}(...)` by hand, accepting the difference"))
        raise _Skip()

    def legacy_hypers(self, method: str, hypers: list, ins: Instr) -> list:
        """Pre-1.0 values where they meant something else: ties_sum's `vote_sgn` was a number
        (≤ 0: the classic sum vote) and its `k` defaulted to 0.2."""
        if method != "ties_sum":
            return hypers
        out = []
        for n, e, a in hypers:
            v = _plain_value(e)
            if n == "vote_sgn" and isinstance(v, (int, float)) and not isinstance(v, bool):
                e = ast.Bool(v <= 0, span=e.span)  # as a 1.x boolean: true is the sum vote
            out.append((n, e, a))
        if not any(n == "k" for n, _, _ in hypers):
            out.append(("k", _literal_expr(0.2, ins.span), Arg("k", Value("number", "0.2", ins.span), ins.span)))
        return out

    # -- the module ---------------------------------------------------------------------------------

    def module(self, out_default: str) -> ast.Module | None:
        if not self.nodes:
            return None
        last_index = self.resolve(len(self.nodes) - 1)
        last = self.nodes[last_index]
        if last.kind == "bad":
            return None
        if last.kind in ("map", "scalar"):
            self.diags.append(error(
                codes.SDMECHA_BAD_LAST_LINE, "the recipe's last line must be a model or a merge",
                self.nodes[-1].instr.span, label=f"this is a {_kind_word(last.kind)}",
                help="the last instruction is the merged model that the recipe produces"))
            return None
        # `param out` stands where the header was, the export where the last instruction is.
        head = self.r.header_span or self.nodes[0].instr.span
        span = self.nodes[-1].instr.span
        stmts: list[ast.Stmt] = [ast.Param("out", ast.TypeExpr("str", span=head),
                                           ast.String(out_default, span=head), span=head,
                                           name_span=head)]
        # A statement's span also covers the instructions folded into it since the previous
        # statement (wrapping `literal`s, conversions, a fused subtraction), so that the printer
        # keeps comments and blank lines where the source had them.
        pending: Span | None = None
        for node in self.nodes:
            if node.name is None or node.kind == "bad":
                pending = pending or node.instr.span
                continue
            whole = (pending or node.instr.span).to(node.instr.span)
            if node.kind == "param":  # a hole: `mecha run --set NAME=model.safetensors` fills it
                stmts.append(ast.Param(node.name, span=whole, name_span=node.instr.kind_span))
            else:
                stmts.append(ast.Let(node.name, node.value,  # type: ignore[arg-type]
                                     span=whole, name_span=node.instr.kind_span))
            pending = None
        value = last.expr if last.name is None else ast.Name(last.name, span=span)
        stmts.append(ast.Export(value, ast.Name("out", span=span),  # type: ignore[arg-type]
                                span=(pending or span).to(span)))
        lines = self.r.text.split("\n")
        whole = Span(self.file, 1, 1, len(lines), len(lines[-1]) + 1)
        return ast.Module(tuple(stmts), span=whole, comments=tuple(self.r.comments))


class _Skip(Exception):
    """An expression that cannot be built (its error was already reported)."""


def _respan(e: ast.Expr, span: Span) -> ast.Expr:
    """`e` (a name or a plain value) with its spans moved to `span`."""
    if isinstance(e, ast.UnaryOp):
        return replace(e, operand=_respan(e.operand, span), span=span)
    if isinstance(e, (ast.Name, ast.Number, ast.String, ast.Bool)):
        return replace(e, span=span)
    return e


_MISSING = object()


def _plain_value(e: ast.Expr) -> object:
    """The Python value of a literal expression, or _MISSING."""
    if isinstance(e, ast.Bool):
        return e.value
    if isinstance(e, ast.Number):
        return e.value
    if isinstance(e, ast.UnaryOp) and e.op == "-" and isinstance(e.operand, ast.Number):
        return -e.operand.value
    if isinstance(e, ast.String):
        return e.value
    return _MISSING


def _same_value(e: ast.Expr, v: object) -> bool:
    got = _plain_value(e)
    if got is _MISSING or isinstance(got, bool) != isinstance(v, bool):
        return False
    return got == v


def _literal_expr(v: object, span: Span | None) -> ast.Expr:
    if isinstance(v, bool):
        return ast.Bool(v, span=span)
    if isinstance(v, str):
        return ast.String(v, span=span)
    return _number(repr(v) if isinstance(v, float) else str(v), span)  # type: ignore[arg-type]


def _show(v: object) -> str:
    return ("true" if v else "false") if isinstance(v, bool) else f'"{v}"' if isinstance(v, str) else str(v)


def _kind_word(kind: str) -> str:
    return {"map": "dict", "scalar": "literal value", "model": "model", "merge": "merge"}.get(kind, kind)


def _is_one(e: ast.Expr) -> bool:
    return isinstance(e, ast.Number) and e.value == 1


def _number(text: str, span: Span) -> ast.Expr:
    neg = text.startswith("-")
    body = text.lstrip("+-")
    if body not in ("inf", "nan"):
        mant, _, exp = body.lower().partition("e")
        if "." in mant:
            whole, _, frac = mant.partition(".")
            mant = f"{int(whole or '0')}.{frac or '0'}"
        else:
            mant = str(int(mant))
        body = mant + (f"e{'-' if exp.startswith('-') else ''}{int(exp.lstrip('+-'))}" if exp else "")
    num = ast.Number(body, span=span)
    return ast.UnaryOp("-", num, span=span) if neg else num


# sd-mecha's generated conversion names: `convert_'sd1-kohya'_to_'sd1-ldm'`, `convert_'X_lora'_to_base`.
_CONVERSION = re.compile(r"convert_(?:'[^'\s]+'|[A-Za-z0-9_]+)_to_(?:'[^'\s]+'|[A-Za-z0-9_]+)")


# sd-mecha's block configs, and the UNet keys its conversion to a model config puts in BASE.
_SUPERMERGER_BLOCKS = {"sd1-supermerger_blocks": "sd1", "sdxl-supermerger_blocks": "sdxl"}
_EMBEDDINGS = {"sd1": ("model.diffusion_model.time_embed.*",),
               "sdxl": ("model.diffusion_model.time_embed.*", "model.diffusion_model.label_emb.*")}


def _singleton_dicts(instrs: list[Instr]) -> set[int]:
    """The `dict` lines that a `literal ... model_config="singleton-mecha"` wraps."""
    out: set[int] = set()
    for ins in instrs:
        if ins.kind != "literal" or not ins.ok:
            continue
        config = next((a.value for a in ins.keywords if a.name == "model_config"), None)
        pos = ins.positional
        if config is not None and config.value == SINGLETON_CONFIG and len(pos) == 1 \
                and pos[0].value.kind == "ref" and pos[0].value.value < ins.index \
                and instrs[pos[0].value.value].kind == "dict":
            out.add(pos[0].value.value)  # type: ignore[arg-type]
    return out


_BLOCK = re.compile(r"(?:BASE|IN\d\d|M00|OUT\d\d)")
_OLD_BLOCK = re.compile(r"(?P<cfg>.+?)_(?P<comp>[A-Za-z0-9]+)_block_(?P<blk>[A-Za-z]+)(?P<n>\d*)")
_OLD_DEFAULT = re.compile(r"(?P<cfg>.+?)_(?P<comp>[A-Za-z0-9]+)_default")


def _selector(k: str, span: Span) -> tuple[int, ast.Selector, str | None]:
    """An sd-mecha dict key as a selector, with its order group (component defaults first, then
    blocks, then `vae`, then tensor keys: later rules win in mechalang) and a warning, if any."""
    if _BLOCK.fullmatch(k):
        return 1, ast.SelName(k, span=span), None
    if k == "VAE":
        return 2, ast.SelName("vae", span=span), None
    m = _OLD_DEFAULT.fullmatch(k)
    if m and m.group("comp") in COMPONENTS:
        return 0, ast.SelName(COMPONENTS[m.group("comp")], span=span), None
    m = _OLD_BLOCK.fullmatch(k)
    if m:
        comp, blk, n = m.group("comp"), m.group("blk"), m.group("n")
        arch = ARCHES.get(m.group("cfg")) or LEGACY_ARCHES.get(m.group("cfg"))
        if comp in ("unet", "diffuser"):
            if blk == "in" and n:
                return 1, ast.SelName(f"IN{int(n):02d}", span=span), None
            if blk == "mid":
                return 1, ast.SelName("M00", span=span), None
            if blk == "out" and n:
                return 1, ast.SelName(f"OUT{int(n):02d}", span=span), None
        pattern = _TEXT_LAYERS.get((arch or "", comp))
        if pattern is not None and blk == "in" and n:
            return 3, ast.SelKey(pattern.format(n=int(n)), span=span), None
        return 3, ast.SelKey(k, span=span), f"no mechalang block for sd-mecha's `{k}`"
    return 3, ast.SelKey(k, span=span), None


def _stem_name(path: str) -> str:
    name = re.split(r"[\\/]", path)[-1]
    low = name.lower()
    for suffix in MODEL_SUFFIXES:
        if low.endswith(suffix):
            name = name[: -len(suffix)]
            break
    ident = re.sub(r"[^0-9A-Za-z_]+", "_", name.encode("ascii", "replace").decode().replace("?", "_"))
    ident = re.sub(r"_+", "_", ident).strip("_")
    if not ident:
        return "model"
    if ident[0].isdigit():
        ident = "m_" + ident
    return ident


def _output_default(file: str) -> str:
    stem = PureWindowsPath(file).stem if "\\" in file else Path(file).stem
    stem = stem.strip()
    if not stem or stem.startswith("<") or any(c in stem for c in '"\n'):
        return "merged.safetensors"
    return f"{stem}_merged.safetensors"

