"""`mecha repl`: build values interactively.

Each accepted statement is appended to a session recipe, which is checked again from the top
(headers are cached, so this is instant); an expression prints its type. Meta-commands:

    :type EXPR           the type of an expression
    :keys EXPR [GLOB]    the tensor keys of a model expression
    :explain EXPR KEY    how KEY of a model expression is computed
    :plan EXPR [GLOB]    the per-key plan of a model expression
    :run EXPR to PATH    merge it into PATH
    :session             the statements so far, as a recipe
    :help, :quit
"""

from __future__ import annotations

import fnmatch
import io
import sys
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

from .diagnostics import render_text

HELP = __doc__.split("\n\n", 1)[1]


class Session:
    def __init__(self, models_dir: str | None = None, cwd: Path | None = None):
        self.models_dir = models_dir
        self.cwd = cwd or Path.cwd()
        self.statements: list[str] = []

    @property
    def display(self) -> str:
        return "<repl>"

    def text(self, extra: str = "") -> str:
        return "\n".join(self.statements + ([extra] if extra else [])) + "\n"

    def evaluate(self, extra: str = ""):
        from .check.evaluate import Evaluator, Options
        from .paths import models_dirs

        ev = Evaluator(Options(models_dirs=models_dirs(self.models_dir)))
        program = ev.run_main(self.cwd / "<repl>", text=self.text(extra), display=self.display)
        return ev, program

    def new_diagnostics(self, program, extra_line_start: int):
        return [d for d in program.diagnostics if d.span is None or d.span.line >= extra_line_start]

    # ------------------------------------------------------------------ one input

    def handle(self, line: str) -> str:
        line = line.strip()
        if not line or line.startswith("#"):
            return ""
        if line.startswith(":"):
            cmd, _, rest = line[1:].partition(" ")
            handler = getattr(self, "cmd_" + cmd, None)
            if handler is None:
                return f"unknown command :{cmd} (try :help)"
            return handler(rest.strip())
        from .syntax import ast
        from .syntax.parser import parse_repl_input

        node, diags = parse_repl_input(line, self.display)
        if node is None or any(d.is_error for d in diags):
            return render_text(diags, {self.display: line}).rstrip()
        if isinstance(node, ast.Export):
            return "exports are not run in the REPL; use :run EXPR to PATH"
        start = len(self.text().splitlines()) + 1
        if isinstance(node, (ast.Let, ast.Def, ast.Param, ast.Import, ast.FromImport)):
            ev, program = self.evaluate(line)
            new = self.new_diagnostics(program, start)
            if any(d.is_error for d in new):
                return render_text(new, program.sources).rstrip()
            self.statements.append(line)
            if isinstance(node, ast.Let):
                return self.describe_name(node.name)
            return render_text(new, program.sources).rstrip() if new else ""
        return self.cmd_type(line)

    def value_of(self, expr: str):
        # The expression goes on a line of its own (newlines never matter in the grammar), so a
        # diagnostic shows the user's text, not the binding wrapped around it.
        ev, program = self.evaluate(f"let __it =\n{expr}")
        start = len(self.text().splitlines()) + 2
        new = self.new_diagnostics(program, start)
        if any(d.is_error for d in new):
            return None, render_text(new, program.sources).rstrip()
        env = ev.module_envs.get(program.main.path)
        return env.values.get("__it") if env else None, None

    def describe_name(self, name: str) -> str:
        value, err = self.value_of(name)
        return err if err else f"{name}: {describe(value)}"

    # ------------------------------------------------------------------ commands

    def cmd_help(self, rest: str) -> str:
        return HELP.rstrip()

    def cmd_quit(self, rest: str) -> str:
        raise EOFError

    cmd_q = cmd_exit = cmd_quit

    def cmd_session(self, rest: str) -> str:
        return self.text().rstrip() or "(empty)"

    def cmd_type(self, rest: str) -> str:
        value, err = self.value_of(rest)
        return err if err else describe(value)

    def cmd_keys(self, rest: str) -> str:
        expr, glob = _split_last(rest)
        from .check.values import ModelValue

        value, err = self.value_of(expr if glob and "*" in glob else rest)
        if err:
            return err
        if not glob or "*" not in glob:
            glob = "*"
        if not isinstance(value, ModelValue):
            from .check.values import type_name

            return f"a {type_name(value)} has no keys"
        keys = [k for k in value.node.keys if fnmatch.fnmatchcase(k, glob)]
        shown = [f"  {k}  {value.node.keys[k].dtype} {list(value.node.keys[k].shape)}" for k in keys[:40]]
        more = [f"  ... {len(keys) - 40} more"] if len(keys) > 40 else []
        return "\n".join([f"{len(keys)} keys"] + shown + more)

    def _with_export(self, expr: str, path: str, fn) -> str:
        tmp = self.cwd / ".mecha-repl.mecha"
        tmp.write_text(self.text(f"export ({expr}) to {path!r}".replace("'", '"')))
        out, err = io.StringIO(), io.StringIO()
        try:
            with redirect_stdout(out), redirect_stderr(err):
                code = fn(str(tmp))
        finally:
            tmp.unlink(missing_ok=True)
        return (out.getvalue() + err.getvalue()).rstrip() + ("" if code == 0 else f"\n(exit {code})")

    def cmd_explain(self, rest: str) -> str:
        expr, key = _split_last(rest)
        if not key:
            return "usage: :explain EXPR KEY"
        from .commands import explain_command

        return self._with_export(expr, "repl.safetensors",
                                 lambda f: explain_command(f, key, [], self.models_dir, "text"))

    def cmd_plan(self, rest: str) -> str:
        expr, glob = _split_last(rest)
        if not glob or "*" not in glob:
            expr, glob = rest, None
        from .commands import plan_command

        return self._with_export(expr, "repl.safetensors",
                                 lambda f: plan_command(f, [], glob, self.models_dir, "text"))

    def cmd_run(self, rest: str) -> str:
        expr, sep, path = rest.rpartition(" to ")
        if not sep:
            return "usage: :run EXPR to PATH"
        path = path.strip().strip('"')
        from .commands import run_command

        target = str((self.cwd / path).resolve())
        return self._with_export(expr, target, lambda f: run_command(
            f, set_=[], output=None, models_dir=self.models_dir, device="cpu", threads=None, precision="fp32",
            overwrite=False, strict=False, dry_run=False, check_finite=False, hash_inputs=False, plugins=[],
            format="text"))


def _split_last(rest: str) -> tuple[str, str]:
    """`EXPR LAST` -> (EXPR, LAST), LAST unquoted (a key or glob may be written in quotes)."""
    parts = rest.rsplit(None, 1)
    if len(parts) != 2:
        return rest, ""
    last = parts[1]
    if len(last) >= 2 and last[0] == last[-1] and last[0] in "\"'":
        last = last[1:-1]
    return parts[0], last


def describe(value) -> str:
    from .check.values import HyperValue, ListValue, ModelValue, show_scalar, type_name

    if isinstance(value, ModelValue):
        n = value.node
        src = f" from {Path(n.load.path).name}" if n.op == "load" else f" ({n.op})"
        return f"{n.type_name}{src}, {len(n.keys)} keys"
    if isinstance(value, HyperValue):
        rules = sum(len(r) for _, r in value.variants)
        return f"{type_name(value)} with {rules} rule{'s' if rules != 1 else ''}"
    if isinstance(value, ListValue):
        return f"{type_name(value)} of {len(value.items)}"
    if isinstance(value, (bool, int, float, str)):
        return f"{type_name(value)} = {show_scalar(value)}"
    return type_name(value)


def run_repl(models_dir: str | None) -> int:
    session = Session(models_dir)
    interactive = sys.stdin.isatty()
    if interactive:
        print("mechalang REPL — :help for commands, :quit to leave")
    while True:
        try:
            line = input("mecha> " if interactive else "")
        except (EOFError, KeyboardInterrupt):
            if interactive:
                print()
            return 0
        try:
            out = session.handle(line)
        except EOFError:
            return 0
        if out:
            print(out)
