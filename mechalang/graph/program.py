"""The program the checker produces: the recipe's exports as nodes of the recipe graph, with the
diagnostics found on the way. Everything after checking (lowering, provenance, the pipeline's
front ends) works from this value."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..diagnostics import Diagnostic, SourceMap, Span
from ..modules import SourceModule
from .nodes import GraphBuilder, Node


@dataclass(frozen=True)
class Export:
    """One `export ... to "path" [as dtype]`. `node` or `path` is None when it had an error."""

    node: Node | None
    path: Path | None  # absolute
    dtype: str | None  # as written after `as` (`fp16`), checked against dtypes.EXPORT_DTYPES
    span: Span | None
    path_span: Span | None
    format: Any = None  # graph.lora_export.LoraFormat for `as lora(...)`; None: a model file
    dtypes: Any = None  # graph.nodes.BoundHyper of dtype names, for `as {vae: fp32, default: fp16}`


@dataclass
class Program:
    main: SourceModule | None
    exports: list[Export]
    diagnostics: list[Diagnostic]
    sources: SourceMap
    params: dict[str, Any]  # the main module's params and the (checked) values they have
    builder: GraphBuilder
    model_names: dict[str, str]  # load path -> the name the recipe gives the model
    # The main module's top-level names and their checked values (the REPL and the Python API
    # read values from here).
    names: dict[str, Any] = field(default_factory=dict)
    # Prints the recipe that ran (check/provenance.py), given each export's output file; the
    # checker sets it, and printing waits until a run needs the text for its provenance.
    recipe_printer: Callable[[list[Path | None]], str] | None = field(default=None, repr=False)
    _stored: dict[tuple, str] = field(default_factory=dict, repr=False)
    # Params given by another recipe file (`--set a=other.mecha`): name -> that file.
    param_files: dict[str, Path] = field(default_factory=dict)

    @property
    def recipe_text(self) -> str:
        """The main recipe that ran, as canonical text: params resolved, paths relative."""
        return self.stored_recipe()

    def stored_recipe(self, export: Export | None = None, output: str | None = None) -> str:
        """The recipe text stored in the outputs' metadata, `export` written to `output` (-o)."""
        outputs = [e.path for e in self.exports]
        if export is not None and output is not None:
            outputs = [Path(output) if e is export else p for e, p in zip(self.exports, outputs)]
        key = tuple(outputs)
        if key not in self._stored:
            self._stored[key] = self.recipe_printer(outputs) if self.recipe_printer is not None else ""
        return self._stored[key]

    @property
    def ok(self) -> bool:
        return not any(d.is_error for d in self.diagnostics)

    @property
    def runnable_exports(self) -> list[Export]:
        """The exports that checked (a node and a path)."""
        return [e for e in self.exports if e.node is not None and e.path is not None]
