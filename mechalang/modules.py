"""Finding and loading recipe modules: import resolution, caching, cycle detection.

An import path resolves relative to the importing file, then `std/...` in the bundled stdlib, then
each folder on `MECHA_PATH`. A path without a suffix gets `.mecha`. Each file is parsed once per
loader; the evaluator caches evaluated modules the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .diagnostics import Diagnostic, Label, SourceMap, Span, codes, error
from .paths import is_file, mecha_path, path_problem, shown_path
from .syntax import ast

STDLIB_DIR = Path(__file__).parent / "stdlib"


@dataclass
class SourceModule:
    path: Path  # absolute, resolved
    display: str  # the name used in spans
    text: str
    tree: ast.Module | None  # None when it did not parse


def display_name(path: Path) -> str:
    """A short name for spans: relative to the working folder when below it."""
    return shown_path(path)


class ModuleLoader:
    def __init__(self, sources: SourceMap | None = None):
        self.sources = sources or SourceMap()
        self._cache: dict[Path, SourceModule] = {}

    def candidates(self, spec: str, importer: Path | None) -> list[Path]:
        name = spec if Path(spec).suffix else spec + ".mecha"
        out: list[Path] = []
        if importer is not None and not name.startswith("std/"):
            out.append(importer.parent / name)
        if name.startswith("std/"):
            out.append(STDLIB_DIR / name[len("std/"):])
        if not Path(name).is_absolute():
            out.extend(d / name for d in mecha_path())
        elif importer is None or name.startswith("std/"):
            out.append(Path(name))
        return out

    def resolve(self, spec: str, importer: Path | None, span: Span | None) -> tuple[Path | None, list[Diagnostic]]:
        problem = path_problem(spec)
        if problem:
            return None, [error(codes.MODULE_NOT_FOUND, f"the module path {problem}", span, label="imported here")]
        tried = self.candidates(spec, importer)
        for p in tried:
            if is_file(p):
                return p.resolve(), []
        looked = ", ".join(display_name(p) for p in tried) or "nowhere"
        return None, [error(codes.MODULE_NOT_FOUND, f"cannot find module `{spec}`", span, label="imported here",
                            help=f"looked in: {looked}; folders on MECHA_PATH are searched too")]

    def load_file(self, path: Path, span: Span | None = None) -> tuple[SourceModule | None, list[Diagnostic]]:
        """Read and parse a file (cached). Missing/unreadable files give diagnostics."""
        from .syntax.parser import parse
        from .syntax.source import read_source

        key = path.resolve() if path.exists() else path
        if key in self._cache:
            return self._cache[key], []
        disp = display_name(path)
        text, diags = read_source(str(path))
        if text is None:
            if span is not None:
                diags = [d if d.span is not None else
                         d.with_secondary(Label(span, "imported here")) for d in diags]
            return None, diags
        self.sources.add(disp, text)
        tree, pdiags = parse(text, disp)
        mod = SourceModule(key, disp, text, tree)
        self._cache[key] = mod
        return mod, list(diags) + list(pdiags)
