"""Parsing `.mecha` text: `parse` turns text into an `ast.Module` (or diagnostics), never raising
on bad input; after a syntax error it resumes at the next statement keyword that starts a line, so
one run reports several errors.

The pieces: grammar.py (the Lark parser and the limits), source.py (reading files), explain.py
(syntax errors in the user's terms), build.py (the AST from Lark's tree), comments.py. Diagnostic
codes are E00xx (reading) and E01xx (syntax) of the registry, diagnostics/codes.py.
"""

from __future__ import annotations

import re

from ..diagnostics import Diagnostic, Span, codes, error
from . import ast
from .build import _Builder, _TooDeep
from .comments import _strip_comments
from .explain import _parse_tree
from .grammar import MAX_SYNTAX_ERRORS

# ------------------------------------------------------------------------------------------------
# Public parsing API


def parse(text: str, file: str) -> tuple[ast.Module | None, list[Diagnostic]]:
    """Parse a whole recipe. The module is None exactly when there are errors."""
    result, diags = _parse_entry(text, file, "module")
    return result, diags  # type: ignore[return-value]


def parse_expression(text: str, file: str) -> tuple[ast.Expr | None, list[Diagnostic]]:
    """Parse one expression (for `--set name=EXPR`, tests and tools)."""
    return _parse_entry(text, file, "expression")  # type: ignore[return-value]


def parse_repl_input(text: str, file: str) -> tuple[ast.Stmt | ast.Expr | None, list[Diagnostic]]:
    """Parse one REPL input: a statement or an expression. Blank input gives (None, [])."""
    if not _strip_comments(text).strip():
        return None, []
    return _parse_entry(text, file, "repl")  # type: ignore[return-value]


# ------------------------------------------------------------------------------------------------
# Driver: parse, explain errors, resynchronise, build the AST


def _parse_entry(text: str, file: str, start: str):
    try:
        return _parse_recovering(text, file, start)
    except RecursionError:  # pragma: no cover - the nesting limits exist to prevent this
        return None, [error(codes.NESTING_TOO_DEEP, "nesting too deep for the parser", Span.point(file, 1, 1))]
    except Exception as e:  # pragma: no cover - a bug; never crash the caller
        return None, [error(codes.PARSER_INTERNAL, f"internal parser error: {type(e).__name__}: {e}",
                            Span.point(file, 1, 1),
                            help="this is a bug in mechalang; please report it with the file")]


_RESYNC = re.compile(r"^(?:import|from|param|let|def|export)\b", re.M)


def _parse_recovering(text: str, file: str, start: str):
    diags: list[Diagnostic] = []
    chunk_start = 0
    source = text
    while True:
        tree, errs, err_pos = _parse_tree(source, file, start)
        if tree is not None:
            ctx = _Builder(file, text)
            try:
                result = ctx.build(tree)
            except _TooDeep as deep:
                diags.append(deep.diagnostic)
                return None, diags
            diags.extend(ctx.diags)
            if diags:
                return None, diags
            return result, []
        diags.extend(errs)
        if start != "module" or len(diags) >= MAX_SYNTAX_ERRORS:
            return None, diags
        resume = None
        for m in _RESYNC.finditer(text, max(err_pos, chunk_start + 1)):
            resume = m.start()
            break
        if resume is None:
            return None, diags
        chunk_start = resume
        source = _mask(text, resume)


def _mask(text: str, upto: int) -> str:
    """`text` with everything before `upto` blanked out (newlines kept, so positions stay)."""
    return re.sub(r"[^\n]", " ", text[:upto]) + text[upto:]
