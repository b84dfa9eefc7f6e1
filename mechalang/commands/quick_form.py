"""What a quick-merge form holds (the TUI's, the web page's), and the recipe, command line and check it stands for.

The form never checks or runs anything itself: `recipe_text` builds the `.mecha` text (the same
text `mecha merge --print-recipe` prints whenever the quick merge can say it), and `check_form`
hands it to `pipeline.load` and `pipeline.check`, the code `mecha check` runs.
"""

from __future__ import annotations

import functools
import shlex
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..diagnostics import Diagnostic, render_text
from .merge import (
    EXPORT_DTYPE_CHOICES,
    NAME_RULE,
    QUICK_METHODS,
    _adapter_problems,
    _let_name,
    default_name,
    folder_format_of,
    merge_recipe,
)

if TYPE_CHECKING:
    from ..syntax import ast

NAME_RULE_TEXT = "the output name takes only letters, digits and . + - (no spaces, no / or \\, no leading . or ..)"
DTYPES = (*EXPORT_DTYPE_CHOICES, None)  # None: as the first model
DISPLAY = "<form>"


def method_specs() -> dict[str, Any]:
    """The methods the form offers: the quick ones first, then every registered method that takes
    two or three models (not variadic, no task-vector inputs), by name."""
    from ..methods import REGISTRY

    out = {}
    for name in QUICK_METHODS:
        spec = REGISTRY.get(name)
        if spec is not None:
            out[name] = spec
    for spec in sorted(REGISTRY.all(), key=lambda s: s.name):
        if spec.name in out or spec.variadic is not None or len(spec.models) not in (2, 3):
            continue
        if any(str(m.space) == "delta" for m in spec.models):
            continue
        out[spec.name] = spec
    return out


def hyper_description(h) -> str:
    """`alpha: float in [0, 1], default 0.5`."""
    default = "" if h.required else f", default {literal_text(h.default)}"
    return f"{h.name}: {h.kind.describe()}{default}"


def literal_text(v: Any) -> str:
    from ..methods.registry import literal as lit

    return lit(v)


@dataclass
class FormState:
    folder: Path
    models: list[str | None] = field(default_factory=lambda: [None, None, None])  # file names; C may be None
    method: str = "weighted_sum"
    alpha: float = 0.5
    hypers: dict[str, Any] = field(default_factory=dict)   # the method's other hyperparameters, as set
    force: bool = False
    dtype: str | None = None
    name: str = ""                 # empty: the default name
    arch: str | None = None        # the first model's architecture (for block weights)
    blocks: dict[str, float] = field(default_factory=dict)
    preset: str | None = None
    mbw: str = ""
    adapters: list[bool] = field(default_factory=lambda: [False, False, False])
    overwrite: bool = False
    out_folder: Path | None = None  # where the output goes (None: the models folder, so it is listed there)
    classes_off: tuple[str, ...] = ()  # classes of layers kept from A (weight 0), after every other rule
    strength: float = 1.0          # a LoRA baked into model A is added at this strength (`--lora`)
    first_kind: str | None = None  # model A's source kind: a diffusers or HF folder gives a folder out

    @property
    def chosen(self) -> list[str]:
        return [m for m in self.models if m]

    @property
    def block_weighted(self) -> bool:
        return bool(self.mbw.strip() or self.preset or self.blocks or self.classes_off)

    def default_name(self) -> str:
        adapters = self.adapters[:len(self.chosen)]
        what = "lora" if any(adapters) else self.method
        value = self.strength if any(adapters) and not adapters[0] else self.alpha  # as `mecha merge` names it
        return default_name(self.chosen, what, value)

    @property
    def folder_format(self) -> str | None:
        """`diffusers` or `hf` when model A is such a folder (the output is one too, as `mecha merge`
        writes it); None for a single file."""
        if any(self.adapters[:len(self.chosen)]):
            return None
        return folder_format_of(self.first_kind)

    @property
    def out_name(self) -> str:
        stem = (self.name.strip() or self.default_name()).removesuffix(".safetensors")
        return stem if self.folder_format else stem + ".safetensors"

    @property
    def output(self) -> Path:
        return (self.out_folder or self.folder) / self.out_name

    @property
    def out_text(self) -> str:
        """The output path as the recipe writes it: a folder output ends in `/`."""
        return str(self.output) + ("/" if self.folder_format else "")

    @property
    def recipe_path(self) -> Path:
        return (self.out_folder or self.folder) / (self.out_name.removesuffix(".safetensors") + ".mecha")

    def quick(self) -> bool:
        """Whether `mecha merge` can say this merge (no block weights, no other hyperparameters)."""
        return self.method in QUICK_METHODS and not self.block_weighted and not self.hypers


def form_problems(s: FormState) -> list[str]:
    """What the form itself refuses before there is a recipe to check."""
    problems = []
    if s.name.strip() and not NAME_RULE.fullmatch(s.name.strip()):
        problems.append(f"bad name {s.name.strip()!r}: {NAME_RULE_TEXT}")
    if s.models[0] is None or s.models[1] is None:
        problems.append("choose models A and B")
    specs = method_specs()
    spec = specs.get(s.method)
    if spec is None:
        problems.append(f"unknown method {s.method!r}")
    elif not any(s.adapters[:len(s.chosen)]) and len(s.chosen) != len(spec.models) and s.models[0] and s.models[1]:
        want = len(spec.models)
        problems.append(f"{s.method} takes {want} models (A, B{', C' if want == 3 else ''}), {len(s.chosen)} chosen"
                        + (": choose model C" if want == 3 else ": set model C to None"))
    if any(s.adapters[:len(s.chosen)]) and s.models[0] and s.models[1]:  # what `mecha merge` refuses of LoRAs
        for d in _adapter_problems(s.chosen, s.adapters[:len(s.chosen)], s.method, None):
            problems.append(d.message + (f" ({d.help})" if d.help else ""))
    return problems


def alpha_expr(s: FormState) -> tuple[ast.Expr, list[ast.Stmt]]:
    """alpha as the recipe writes it: a number, a block map, an MBW string or a preset; the classes
    switched off are rules after those (`attn2: 0.0`: later rules win), so they keep model A."""
    from ..check.provenance import literal
    from ..syntax import ast

    off = tuple(ast.MapEntry(ast.SelName(c), literal(0.0)) for c in s.classes_off)
    if s.mbw.strip():
        value = ast.Call(ast.Name("mbw"), (ast.Name(s.arch or "sd1"), ast.String(s.mbw.strip())))
        return (ast.With(value, ast.HyperMap(off)) if off else value), []
    if s.preset:
        value = ast.Name(s.preset)
        return (ast.With(value, ast.HyperMap(off)) if off else value), [
            ast.FromImport("std/presets", (ast.ImportName(s.preset),))]
    if s.blocks or off:
        entries = [ast.MapEntry(ast.SelDefault(), literal(float(s.alpha)))]
        entries += [ast.MapEntry(ast.SelName(b), literal(float(v))) for b, v in s.blocks.items()]
        return ast.HyperMap(tuple(entries) + off), []
    return literal(float(s.alpha)), []


def recipe_text(s: FormState) -> str:
    """The `.mecha` recipe of the form: `merge_recipe`'s (what `mecha merge` runs) when the quick
    merge can say it, else the same shape with the method's hyperparameters and block weights."""
    from ..check.provenance import literal
    from ..syntax import ast
    from ..syntax.printer import print_module

    models = s.chosen
    adapters = s.adapters[:len(models)]
    if s.quick() or any(adapters):
        return merge_recipe(models, method=s.method, alpha=s.alpha, output=s.out_text, dtype=s.dtype,
                            adapters=adapters, strength=s.strength, folder_format=s.folder_format or "diffusers")
    names: list[str] = []
    stmts: list[ast.Stmt] = []
    for i, m in enumerate(models):
        n = _let_name(Path(m).stem, i, names, s.method)
        names.append(n)
        stmts.append(ast.Let(n, ast.Call(ast.Name("model"), (ast.String(m),))))
    spec = method_specs().get(s.method)
    keywords = []
    if spec is not None and spec.hyper("alpha") is not None:
        value, imports = alpha_expr(s)
        stmts[:0] = imports
        keywords.append(ast.Keyword("alpha", value))
    for k, v in s.hypers.items():
        if k != "alpha":
            keywords.append(ast.Keyword(k, literal(v)))
    merged = next(n for n in ("merged", "merged_result", "merged_model") if n not in names)
    stmts.append(ast.Let(merged, ast.Call(ast.Name(s.method), tuple(ast.Name(n) for n in names), tuple(keywords))))
    if s.folder_format:
        fmt = ast.Call(ast.Name(s.folder_format), (), (ast.Keyword("dtype", ast.String(s.dtype)),) if s.dtype else ())
        stmts.append(ast.Export(ast.Name(merged), ast.String(s.out_text), s.folder_format, fmt))
    else:
        stmts.append(ast.Export(ast.Name(merged), ast.String(s.out_text), s.dtype, None))
    return print_module(ast.Module(tuple(stmts)))


def command_line(s: FormState) -> str:
    """The equivalent `mecha merge …`, or how to run the saved recipe when the quick merge cannot say it."""
    if not s.quick() and not any(s.adapters[:len(s.chosen)]):
        return f"mecha run {shlex.quote(str(s.recipe_path))}   (block weights or hyperparameters: save the recipe)"
    words = ["mecha", "merge", *s.chosen]
    if s.method != "weighted_sum":
        words += ["--method", s.method]
    adapters = s.adapters[:len(s.chosen)]
    if any(adapters) and not adapters[0]:
        words += ["--lora", f"{s.strength:g}"]
    else:
        words += ["--alpha", f"{s.alpha:g}"]
    if s.force:
        words.append("--force")
    if s.dtype:
        words += ["--dtype", s.dtype]
    words += ["--name", s.out_name.removesuffix(".safetensors"), "--models-dir", str(s.folder)]
    if s.out_folder is not None and s.out_folder != s.folder:  # `mecha merge` writes into the models folder
        return f"mecha run {shlex.quote(str(s.recipe_path))}   (an output folder of its own: save the recipe)"
    if s.overwrite:
        words.append("--overwrite")
    return " ".join(shlex.quote(w) for w in words)


@dataclass
class CheckResult:
    ok: bool
    lines: list[str]                       # the form's problems, or the rendered diagnostics
    diagnostics: list[Diagnostic] = field(default_factory=list)
    text: str = ""
    total_keys: int = 0
    program: Any = None


_lock = threading.Lock()  # checks may be started from worker threads: one at a time


def check_text(text: str, *, models_dir: Path, base_dir: Path, name: str = DISPLAY, force: bool = False) -> CheckResult:
    """`pipeline.load` and `pipeline.check` of a recipe text: what `mecha check` reports (torch-free)."""
    with _lock:
        from .. import pipeline  # late: the form draws before the checker is loaded

        program = pipeline.load(text=text, name=name, models_dir=models_dir, base_dir=base_dir, force=force)
        checked = pipeline.check(program)
    diags = checked.diagnostics
    lines = render_text(diags, checked.sources).rstrip().splitlines() if diags else []
    return CheckResult(checked.ok, lines, diags, text, checked.total_keys, program)


def check_form(s: FormState) -> CheckResult:
    """The form's problems, else `pipeline.check` of its recipe (torch-free)."""
    problems = form_problems(s)
    if problems:
        return CheckResult(False, problems)
    r = check_text(recipe_text(s), models_dir=s.folder, base_dir=s.folder, force=s.force)
    diags, lines, ok, text, program = r.diagnostics, r.lines, r.ok, r.text, r.program
    if ok and s.output.exists() and not s.overwrite:  # what `execute` would refuse: say it now
        ok = False
        lines.insert(0, f"{s.out_name} exists in the models folder: tick overwrite, or choose another name")
    return CheckResult(ok, lines, diags, text, r.total_keys, program)


def preset_weights(arch: str) -> dict[str, list[float]]:
    """The presets of `std/presets` for `arch` (sd1, sd2, sdxl), each as its weights in block order,
    read from the file's `mbw(arch, "...")` strings, through its `let` aliases and the `def`s that
    give one string to several architectures (so a new preset appears here too)."""
    return {name: list(w[arch]) for name, w in _preset_strings().items() if arch in w}


@functools.lru_cache(maxsize=1)
def _preset_strings() -> dict[str, dict[str, tuple[float, ...]]]:
    """preset name -> {arch: weights}, from the parsed std/presets."""
    from ..syntax import ast
    from ..syntax.parser import parse

    path = Path(__file__).parent.parent / "stdlib" / "presets.mecha"
    try:
        tree, _ = parse(path.read_text(encoding="utf-8"), str(path))
    except OSError:
        return {}
    if tree is None:
        return {}
    defs = {s.name: s for s in tree.statements if isinstance(s, ast.Def) and not isinstance(s.body, ast.Block)}
    out: dict[str, dict[str, tuple[float, ...]]] = {}

    def strings(e, env: dict[str, str]) -> dict[str, str]:
        if isinstance(e, ast.BinOp) and e.op == "|":
            return {**strings(e.left, env), **strings(e.right, env)}
        if isinstance(e, ast.Call) and isinstance(e.func, ast.Name) and not e.kwargs:
            args = [env.get(a.id, a.id) if isinstance(a, ast.Name) else getattr(a, "value", None) for a in e.args]
            if e.func.id == "mbw" and len(args) == 2 and all(isinstance(a, str) for a in args):
                return {args[0]: args[1]}
            d = defs.get(e.func.id)
            if d is not None and len(d.params) == len(args):
                return strings(d.body, {p.name: a for p, a in zip(d.params, args)})
        return {}

    for s in tree.statements:
        if not isinstance(s, ast.Let):
            continue
        if isinstance(s.value, ast.Name):  # an alias of an earlier preset
            if s.value.id in out:
                out[s.name] = out[s.value.id]
            continue
        weights = {}
        for a, text in strings(s.value, {}).items():
            try:
                weights[a] = tuple(float(w) for w in text.split(","))
            except ValueError:
                pass
        out[s.name] = weights
    return out


def arch_blocks(arch: str | None) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The blocks a block-weight form offers for `arch` (its MBW blocks, else all) and its classes."""
    if not arch:
        return (), ()
    from ..archs.registry import get_arch

    a = get_arch(arch)
    if a is None:
        return (), ()
    return tuple(a.mbw_blocks or a.blocks), tuple(a.classes)
