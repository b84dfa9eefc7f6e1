"""The layers of the package hold: every import, function-level ones included, points down.

Top to bottom (DESIGN: front ends → pipeline → check → graph → runtime; sources, kinds, archs,
methods, syntax and diagnostics below them):

    entry points           mechalang (the package), __main__
    the command line       cli
    front ends and tools   repl, api, tui, ui, synth
    commands               commands (what the CLI runs, and the text other front ends show)
    pipeline               pipeline
    check                  check
    graph                  graph
    runtime                runtime (its plan.py is the contract lowering produces)
    sources of recipes     modules, compat, sources, kinds
    data and methods       archs, methods
    syntax                 syntax
    diagnostics            diagnostics
    shared facts           dtypes, units, paths, deep, _version

A module may import its own unit (the same subpackage) and anything in a lower layer; never a
unit of its own layer or of a higher one.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).parent.parent / "mechalang"

LAYERS: list[set[str]] = [
    {"mechalang", "mechalang.__main__"},
    {"mechalang.cli"},
    {"mechalang.repl", "mechalang.api", "mechalang.tui", "mechalang.ui", "mechalang.synth"},
    {"mechalang.commands"},
    {"mechalang.pipeline"},
    {"mechalang.check"},
    {"mechalang.graph"},
    {"mechalang.runtime"},
    {"mechalang.modules", "mechalang.compat", "mechalang.sources", "mechalang.kinds"},
    {"mechalang.archs", "mechalang.methods"},
    {"mechalang.syntax"},
    {"mechalang.diagnostics"},
    {"mechalang.dtypes", "mechalang.units", "mechalang.paths", "mechalang.deep", "mechalang._version"},
]


def unit_of(module: str) -> str:
    """The layer unit a module belongs to: `mechalang.check.calls` -> `mechalang.check`."""
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) > 1 else parts[0]


def rank_of(unit: str) -> int | None:
    return next((i for i, layer in enumerate(LAYERS) if unit in layer), None)


def module_name(path: Path, root: Path) -> str:
    rel = path.relative_to(root.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imports_of(module: str, source: str, is_package: bool, known: set[str]) -> list[tuple[str, int]]:
    """(imported module, line) for every import in `source`, at any depth, made absolute."""
    package = module if is_package else module.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out.extend((a.name, node.lineno) for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")
                base_parts = base_parts[:len(base_parts) - (node.level - 1)]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            for a in node.names:  # `from . import x` may import the submodule x
                sub = f"{base}.{a.name}"
                out.append((sub if sub in known else base, node.lineno))
    return out


def layer_violations(sources: dict[str, tuple[str, bool]]) -> list[str]:
    """Every import that points up or sideways, as `module:line imports target (why)`.
    `sources`: module name -> (source text, is a package)."""
    known = set(sources)
    problems = []
    for module, (source, is_package) in sorted(sources.items()):
        here = unit_of(module)
        rank = rank_of(here)
        if rank is None:
            problems.append(f"{module}: not in any layer (add its unit to LAYERS)")
            continue
        for target, line in imports_of(module, source, is_package, known):
            if target != "mechalang" and not target.startswith("mechalang."):
                continue
            there = unit_of(target)
            if there == here:
                continue
            trank = rank_of(there)
            if trank is None:
                problems.append(f"{module}:{line} imports {target}, which is in no layer")
            elif trank < rank:
                problems.append(f"{module}:{line} imports {target} (up: {there} is above {here})")
            elif trank == rank:
                problems.append(f"{module}:{line} imports {target} (sideways: {there} and {here} "
                                f"are one layer)")
    return problems


def package_sources() -> dict[str, tuple[str, bool]]:
    return {module_name(p, PACKAGE): (p.read_text(encoding="utf-8"), p.name == "__init__.py")
            for p in PACKAGE.rglob("*.py")}


def test_every_import_points_down():
    problems = layer_violations(package_sources())
    assert not problems, "\n".join(problems)


def test_every_unit_is_in_a_layer():
    units = {unit_of(m) for m in package_sources()}
    assert {u for u in units if rank_of(u) is None} == set()


def test_a_violation_is_caught():
    fake = {
        "mechalang.graph": ("", True),
        "mechalang.graph.lower": ("def f():\n    from ..check.values import ModelValue\n", False),
        "mechalang.check": ("", True),
        "mechalang.check.values": ("from ..graph import nodes\n", False),
        "mechalang.graph.nodes": ("", False),
        "mechalang.archs": ("", True),
        "mechalang.archs.info": ("import mechalang.methods.registry\n", False),
        "mechalang.methods": ("", True),
        "mechalang.methods.registry": ("from .. import pipeline\n", False),
        "mechalang.pipeline": ("", False),
    }
    problems = layer_violations(fake)
    assert any(p.startswith("mechalang.graph.lower:2 imports mechalang.check.values (up") for p in problems)
    assert any(p.startswith("mechalang.archs.info:1 imports mechalang.methods.registry (sideways") for p in problems)
    assert any(p.startswith("mechalang.methods.registry:1 imports mechalang.pipeline (up") for p in problems)
    assert not any(p.startswith("mechalang.check.values") for p in problems)  # check → graph is down
