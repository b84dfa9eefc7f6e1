"""The recipe text stored with every output: the main module, canonically printed, with each
param's default replaced by the value it had in this run (`--set` values included)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from ..syntax import ast
from ..syntax.printer import print_module
from .values import ArchValue, ModelValue


def literal(value: Any) -> ast.Expr | None:
    """An AST literal for a param value (None when it has no literal form)."""
    if isinstance(value, bool):
        return ast.Bool(value)
    if isinstance(value, (int, float)):
        text = repr(value)
        if text.startswith("-"):
            return ast.UnaryOp("-", ast.Number(text[1:]))
        return ast.Number(text)
    if isinstance(value, str):
        return ast.String(value)
    if isinstance(value, ArchValue):
        return ast.Name(value.arch.name)
    if isinstance(value, ModelValue) and value.node.op == "load":
        return ast.Call(ast.Name("model"), (ast.String(value.node.load.path),))
    return None


def resolved_recipe_text(tree: ast.Module, params: dict[str, Any]) -> str:
    stmts = []
    for s in tree.statements:
        if isinstance(s, ast.Param) and params.get(s.name) is not None:
            lit = literal(params[s.name])
            if lit is not None:
                s = replace(s, default=lit)
        stmts.append(s)
    return print_module(ast.Module(tuple(stmts)))
