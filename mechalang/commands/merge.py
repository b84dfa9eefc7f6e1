"""`mecha merge A B [C]`: the quick merge of GUI mergers, as one command.

The command writes a recipe (as an AST, printed canonically, so any file name round-trips) and
runs it like any other: `--print-recipe` shows it instead.
"""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path

from ..diagnostics import codes, did_you_mean, error
from ..paths import models_dirs

# The recipe's syntax tree, printer, grammar and the command's output are imported where they are
# used, not here: the forms (`mecha tui`, `mecha ui`) import this module for its rules, and draw
# their first frame before they need the rest.

QUICK_METHODS = ("weighted_sum", "sigmoid", "inv_sigmoid", "add_difference")
EXPORT_DTYPE_CHOICES = ("fp16", "bf16", "fp32")
# Output names (`--name`, the form's name box, and the default name): letters, digits and . + -
# (InvokeAI's rule), never hidden (a leading `.`) and never `..`.
NAME_RULE = re.compile(r"(?!\.)(?!.*\.\.)[A-Za-z0-9.+-]+")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_BUILTIN_NAMES = {"model", "key", "mbw", "lora", "recipe"}


def name_stem(model: str, i: int = 0) -> str:
    """A model's file or folder name as a part of an output name: without its extension, each run
    of characters the name rule refuses as one `-` (accents dropped), never hidden, never `..`."""
    name = Path(model.rstrip("/\\")).name
    for suffix in (".safetensors.index.json", ".index.json"):
        name = name.removesuffix(suffix)
    stem = Path(name).stem if Path(name).suffix.lower() in MODEL_SUFFIXES else name
    stem = unicodedata.normalize("NFKD", stem).encode("ascii", "ignore").decode()  # café → cafe
    stem = re.sub(r"[^A-Za-z0-9.+-]+", "-", stem)
    stem = re.sub(r"\.{2,}", ".", stem).strip(".-")
    return stem or f"model{i + 1}"


MODEL_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin", ".json")


def default_name(models: list[str], what: str, value: float) -> str:
    """The output name when none is given: `a+b-weighted-sum-0.5` (it obeys NAME_RULE)."""
    stems = [name_stem(m, i) for i, m in enumerate(models)] or ["merged"]
    return "+".join(stems) + f"-{what.replace('_', '-')}-{value:g}"


def merge_recipe(models: list[str], *, method: str, alpha: float, output: str, dtype: str | None,
                 adapters: list[bool] | None = None, strength: float = 1.0, arch: str | None = None,
                 folder_format: str = "diffusers") -> str:
    """The recipe `mecha merge` runs: one `let` per model, named after its file, and one export.

    With adapters (`adapters[i]` true for a LoRA): a model followed by LoRAs bakes them,
    `base + s * lora(…, base=base) + …`; LoRAs alone merge as adapters, `(1 − α)·A + α·B` written
    as one LoRA by exact concatenation (never a per-tensor average of up and down factors).
    arch: every model read as this architecture (`model(…, arch=…)`). An output ending in `/` is a
    folder in `folder_format` (`diffusers` or `hf`, the layout of the first model's folder)."""
    from ..check.provenance import literal
    from ..syntax import ast
    from ..syntax.printer import print_module

    adapters = adapters or [False] * len(models)
    names: list[str] = []
    lets = []
    for i, m in enumerate(models):
        name = _let_name(Path(m).stem, i, names, method)
        names.append(name)
        if adapters[i] and not adapters[0]:  # baked into the first model: its shapes are the targets
            value = ast.Call(ast.Name("lora"), (ast.String(m),), (ast.Keyword("base", ast.Name(names[0])),))
        elif adapters[i]:
            value = ast.Call(ast.Name("lora"), (ast.String(m),))
        else:
            value = ast.Call(ast.Name("model"), (ast.String(m),),
                             (ast.Keyword("arch", ast.Name(arch)),) if arch else ())
        lets.append(ast.Let(name, value))
    merged = next(n for n in ("merged", "merged_result", "merged_model") if n not in names)
    fmt = None
    if adapters[0]:  # LoRA + LoRA: a weighted sum of deltas, written as one LoRA
        value = ast.BinOp("+", ast.BinOp("*", literal(1 - float(alpha)), ast.Name(names[0])),
                          ast.BinOp("*", literal(float(alpha)), ast.Name(names[1])))
        fmt = ast.Call(ast.Name("lora"), (), (ast.Keyword("dtype", ast.String(dtype)),) if dtype else ())
    elif any(adapters):
        value = ast.Name(names[0])
        for n in names[1:]:
            value = ast.BinOp("+", value, ast.BinOp("*", literal(float(strength)), ast.Name(n)))
    else:
        value = ast.Call(ast.Name(method), tuple(ast.Name(n) for n in names),
                         (ast.Keyword("alpha", literal(float(alpha))),))
    lets.append(ast.Let(merged, value))
    if fmt is None and output.endswith(("/", "\\")):  # a folder: a diffusers pipeline or a Hugging Face folder
        fmt = ast.Call(ast.Name(folder_format), (), (ast.Keyword("dtype", ast.String(dtype)),) if dtype else ())
        return print_module(ast.Module((*lets, ast.Export(ast.Name(merged), ast.String(output), folder_format, fmt))))
    export = ast.Export(ast.Name(merged), ast.String(output), "lora" if fmt else dtype, fmt)
    return print_module(ast.Module((*lets, export)))


FOLDER_FORMATS = ("diffusers", "hf")  # source kinds whose layout is also an output format (`as diffusers`, `as hf`)


def folder_format_of(kind: str | None) -> str | None:
    """The output format that writes a source of `kind`'s layout, if it is a folder format."""
    return kind if kind in FOLDER_FORMATS else None


def _inspect(models: list[str], models_dir: str | None) -> tuple[list[bool], list[str | None]]:
    """Which of the models are adapters, and each one's source kind (read from their headers; a
    model that cannot be read is left to the recipe's check, which says why)."""
    from ..kinds.adapter import is_adapter
    from ..sources import SourceError, open_source

    adapters, kinds = [], []
    for m in models:
        p = Path(m).expanduser()
        candidates = [p] if p.is_absolute() else [Path.cwd() / p] + [d / p for d in models_dirs(models_dir)]
        path = next((c for c in candidates if c.exists()), None)
        try:
            src = open_source(str(path)) if path is not None else None
        except SourceError:
            src = None
        adapters.append(src is not None and is_adapter(src.tensors))
        kinds.append(src.kind if src is not None else None)
    return adapters, kinds


def _adapters(models: list[str], models_dir: str | None) -> list[bool]:
    """Which of the models are adapters (see `_inspect`)."""
    return _inspect(models, models_dir)[0]


def _adapter_problems(models: list[str], adapters: list[bool], method: str, lora: float | None) -> list:
    """A LoRA where `mecha merge` cannot use one, with what to type instead."""
    if not any(adapters):
        if lora is not None:
            return [error(codes.ADAPTER_MISPLACED, "--lora bakes LoRAs, but none of the files given is a LoRA",
                          None, help="mecha merge BASE.safetensors LORA.safetensors --lora 0.8")]
        return []
    names = [Path(m).name for m, a in zip(models, adapters) if a]
    if adapters[0] and not all(adapters):
        return [error(codes.ADAPTER_MISPLACED, f"`{Path(models[0]).name}` is a LoRA, given first: the first file "
                                               "is the model the LoRAs are baked into", None,
                      help="put the model first: mecha merge MODEL.safetensors " + " ".join(names))]
    if all(adapters):
        if len(models) != 2 or method != "weighted_sum":
            return [error(codes.ADAPTER_MISPLACED, "LoRAs merge with --method weighted_sum, two at a time (as one "
                                                   "LoRA, by concatenation)", None,
                          help="for more, or another method, write a recipe: see docs/adapters.md")]
        return []
    if method != "weighted_sum":
        return [error(codes.ADAPTER_MISPLACED, f"{', '.join(f'`{n}`' for n in names)}: a LoRA cannot be an input "
                                               f"of {method}; it is baked into the first model", None,
                      help="mecha merge MODEL.safetensors " + " ".join(names) + " --lora 0.8")]
    return []


def _let_name(stem: str, i: int, taken: list[str], method: str) -> str:
    """A recipe name for a model file: its stem in ASCII word characters, unless that is taken,
    a keyword or a builtin (then `m{i}_...`)."""
    from ..syntax.grammar import RESERVED_WORDS

    name = re.sub(r"[^A-Za-z0-9_]", "_", stem)
    if (_IDENT.fullmatch(name) and name not in taken and name not in RESERVED_WORDS
            and name not in _BUILTIN_NAMES and name != method):
        return name
    return f"m{i}_{name}".rstrip("_")


def output_target(output: str | None, name: str | None, default: str, models_dir: str | None,
                  folder: bool = False) -> str:
    """Where the merge is written: `-o` (a file, or a folder to put the named file in), else the
    first models folder (as GUI mergers do), else the working folder. With `folder` (the inputs
    are diffusers or Hugging Face folders) the output is a folder too, its path ending in `/`: `-o`
    names that folder (or, with --name, the folder to put it in)."""
    base = (name or default).removesuffix(".safetensors")
    file_name = base + "/" if folder else base + ".safetensors"
    if output is not None:
        p = Path(output).expanduser()
        if folder:  # -o names the output folder itself; with --name, the folder to put it in
            return str(p / base if name else p) + "/"
        if output.endswith(("/", "\\")) or p.is_dir():
            return str(p / file_name)
        return str(p)
    dirs = models_dirs(models_dir)
    return str((dirs[0] if dirs else Path.cwd()) / file_name) + ("/" if folder else "")


def _option_problems(name: str | None, output: str | None, dtype: str | None, arch: str | None) -> list:
    problems = []
    if name is not None and not NAME_RULE.fullmatch(name):
        problems.append(error(codes.BAD_OUTPUT_NAME, f"--name {name!r}: use only letters, digits and . + - "
                                                     "(not starting with `.`, no `..`)", None))
    if name is not None and output is not None and not (output.endswith(("/", "\\")) or Path(output).expanduser().is_dir()):
        problems.append(error(codes.INVALID_OPTION, f"--name {name!r} and -o {output!r}: -o names the file; give "
                                                    "--name only with -o FOLDER/", None))
    if dtype is not None and dtype not in EXPORT_DTYPE_CHOICES:
        problems.append(error(codes.INVALID_OPTION, f"--dtype must be one of {', '.join(EXPORT_DTYPE_CHOICES)}, "
                                                    f"not {dtype!r}", None))
    if arch is not None:
        from ..archs.registry import all_archs_by_name

        known = all_archs_by_name()
        if arch not in known:
            sugg = did_you_mean(arch, list(known))
            problems.append(error(codes.UNKNOWN_ARCH, f"--arch {arch!r} is not an architecture", None,
                                  help=(f"did you mean {sugg!r}? " if sugg else "")
                                  + "`mecha info` lists the architectures"))
    return problems


def merge_command(models: list[str], *, method: str = "weighted_sum", alpha: float = 0.5,
                  force: bool = False, name: str | None = None, models_dir: str | None = None,
                  overwrite: bool = False, print_recipe: bool = False, device: str = "cpu",
                  threads: int | None = None, dtype: str | None = None, format: str = "text",
                  lora: float | None = None, output: str | None = None, hash_inputs: bool = False,
                  arch: str | None = None) -> int:
    from .output import fail

    problems = []
    adapters, kinds = _inspect(models, models_dir)
    # Folders in, a folder out, in the first model's layout (what InvokeAI users and LLM users have)
    folder_format = folder_format_of(kinds[0]) if models and not any(adapters) else None
    if method not in QUICK_METHODS:
        sugg = did_you_mean(method, QUICK_METHODS)
        problems.append(error(codes.UNKNOWN_QUICK_METHOD, f"--method {method!r} is not a quick-merge method",
                              None, help=(f"did you mean {sugg!r}? " if sugg else "")
                              + f"use one of {', '.join(QUICK_METHODS)}, or write a recipe for others"))
    elif any(adapters) or lora is not None:
        problems += _adapter_problems(models, adapters, method, lora)
    else:
        want = 3 if method == "add_difference" else 2
        if len(models) != want:
            problems.append(error(codes.QUICK_MERGE_MODEL_COUNT,
                                  f"{method} takes {want} models, {len(models)} given", None))
    problems += _option_problems(name, output, dtype, arch)
    if problems:
        return fail(problems, None, format)
    what = "lora" if any(adapters) else method
    value = alpha if all(adapters) or not any(adapters) else (1 if lora is None else lora)
    if folder_format and output is not None and Path(output).suffix.lower() in MODEL_SUFFIXES:
        folder_format = None  # `-o merged.safetensors`: the user asks for one file
    target = output_target(output, name, default_name(models, what, value), models_dir, folder=bool(folder_format))
    text = merge_recipe(models, method=method, alpha=alpha, output=target, dtype=dtype,
                        adapters=adapters, strength=1.0 if lora is None else lora, arch=arch,
                        folder_format=folder_format or "diffusers")
    if print_recipe:
        print(text, end="")
        return 0
    from .run import run_command  # late: the form of `mecha tui` reads this module's rules only

    return run_command("<merge>", models_dir=models_dir, device=device, threads=threads,
                       overwrite=overwrite, format=format, text=text, display="<merge>", force=force,
                       hash_inputs=hash_inputs)
