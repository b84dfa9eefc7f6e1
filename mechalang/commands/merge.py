"""`mecha merge A B [C]`: the quick merge of GUI mergers, as one command.

The command writes a recipe (as an AST, printed canonically, so any file name round-trips) and
runs it like any other: `--print-recipe` shows it instead.
"""

from __future__ import annotations

import re
from pathlib import Path

from ..check.provenance import literal
from ..diagnostics import codes, did_you_mean, error
from ..paths import models_dirs
from ..syntax import ast
from ..syntax.grammar import RESERVED_WORDS
from ..syntax.printer import print_module
from .output import fail
from .run import run_command

QUICK_METHODS = ("weighted_sum", "sigmoid", "inv_sigmoid", "add_difference")
EXPORT_DTYPE_CHOICES = ("fp16", "bf16", "fp32")
NAME_RULE = re.compile(r"[A-Za-z0-9.+-]+")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_BUILTIN_NAMES = {"model", "key", "mbw"}


def merge_recipe(models: list[str], *, method: str, alpha: float, output: str, dtype: str | None) -> str:
    """The recipe `mecha merge` runs: one `let` per model, named after its file, and one export."""
    names: list[str] = []
    lets = []
    for i, m in enumerate(models):
        name = _let_name(Path(m).stem, i, names, method)
        names.append(name)
        lets.append(ast.Let(name, ast.Call(ast.Name("model"), (ast.String(m),))))
    call = ast.Call(ast.Name(method), tuple(ast.Name(n) for n in names),
                    (ast.Keyword("alpha", literal(float(alpha))),))
    merged = next(n for n in ("merged", "merged_result", "merged_model") if n not in names)
    lets.append(ast.Let(merged, call))
    export = ast.Export(ast.Name(merged), ast.String(output), dtype)
    return print_module(ast.Module((*lets, export)))


def _let_name(stem: str, i: int, taken: list[str], method: str) -> str:
    """A recipe name for a model file: its stem in ASCII word characters, unless that is taken,
    a keyword or a builtin (then `m{i}_...`)."""
    name = re.sub(r"[^A-Za-z0-9_]", "_", stem)
    if (_IDENT.fullmatch(name) and name not in taken and name not in RESERVED_WORDS
            and name not in _BUILTIN_NAMES and name != method):
        return name
    return f"m{i}_{name}".rstrip("_")


def merge_command(models: list[str], *, method: str = "weighted_sum", alpha: float = 0.5,
                  force: bool = False, name: str | None = None, models_dir: str | None = None,
                  overwrite: bool = False, print_recipe: bool = False, device: str = "cpu",
                  threads: int | None = None, dtype: str | None = None, format: str = "text") -> int:
    problems = []
    if method not in QUICK_METHODS:
        sugg = did_you_mean(method, QUICK_METHODS)
        problems.append(error(codes.UNKNOWN_QUICK_METHOD, f"--method {method!r} is not a quick-merge method",
                              None, help=(f"did you mean {sugg!r}? " if sugg else "")
                              + f"use one of {', '.join(QUICK_METHODS)}, or write a recipe for others"))
    else:
        want = 3 if method == "add_difference" else 2
        if len(models) != want:
            problems.append(error(codes.QUICK_MERGE_MODEL_COUNT,
                                  f"{method} takes {want} models, {len(models)} given", None))
    if name is not None and not NAME_RULE.fullmatch(name):
        problems.append(error(codes.BAD_OUTPUT_NAME, f"--name {name!r}: use only letters, digits and . + -",
                              None))
    if dtype is not None and dtype not in EXPORT_DTYPE_CHOICES:
        problems.append(error(codes.INVALID_OPTION, f"--dtype must be one of {', '.join(EXPORT_DTYPE_CHOICES)}, "
                                                    f"not {dtype!r}", None))
    if problems:
        return fail(problems, None, format)
    stems = [Path(m).stem for m in models]
    out_name = (name or "_".join(stems) + f"_{method}_{alpha:g}").removesuffix(".safetensors") + ".safetensors"
    dirs = models_dirs(models_dir)  # the output goes to the models folder, as GUI mergers do
    out_dir = dirs[0] if dirs else Path.cwd()
    text = merge_recipe(models, method=method, alpha=alpha, output=str(out_dir / out_name), dtype=dtype)
    if print_recipe:
        print(text, end="")
        return 0
    return run_command("<merge>", models_dir=models_dir, device=device, threads=threads,
                       overwrite=overwrite, format=format, text=text, display="<merge>", force=force)
