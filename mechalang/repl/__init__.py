"""`mecha repl`: build values interactively.

Each accepted statement is appended to a session recipe, which is checked again from the top
(headers are cached, so this is instant); an expression prints its type. Meta-commands:

    :type EXPR                      the type of an expression
    :keys EXPR [GLOB]               the tensor keys of a model expression
    :explain EXPR KEY               how KEY of a model expression is computed
    :plan EXPR [GLOB]               the per-key plan of a model expression
    :run EXPR to PATH [--overwrite] merge it into PATH (the only command that reads tensors)
    :session                        the statements so far, as a recipe
    :save FILE [--overwrite]        write the statements so far to FILE, formatted
    :help                           this list
    :quit (:q, :exit, Ctrl-D)       leave

Input continues on a `... ` line while a bracket, brace or parenthesis is open. In a terminal:
Tab completes names, methods, keywords, commands, the blocks/classes/components of the models
in scope and the files in `model("...")`/`lora("...")`; Up/Down walk the history (kept across
sessions in $MECHA_HISTORY, default ~/.local/state/mechalang/repl_history); Ctrl-C drops the line.
"""

from __future__ import annotations

import fnmatch
import re
import shlex
import sys
from pathlib import Path
from typing import Iterable

from .. import pipeline
from ..diagnostics import render_text

HELP = "Commands:\n\n" + __doc__.split("Meta-commands:\n\n", 1)[1]
DISPLAY = "<repl>"


class Session:
    def __init__(self, models_dir: str | None = None, cwd: Path | None = None, plugins: Iterable[str] = ()):
        self.models_dir = models_dir
        self.cwd = cwd or Path.cwd()
        self.plugins = tuple(plugins)
        self.statements: list[str] = []
        self.program: pipeline.Program | None = None  # the last accepted session, checked

    def text(self, extra: str = "") -> str:
        return "\n".join(self.statements + ([extra] if extra else [])) + "\n"

    def load(self, extra: str = "", *, expect_exports: bool = False) -> pipeline.Program:
        return pipeline.load(text=self.text(extra), name=DISPLAY, models_dir=self.models_dir,
                             plugins=self.plugins, base_dir=self.cwd, expect_exports=expect_exports)

    def new_diagnostics(self, diags, extra_line_start: int):
        return [d for d in diags if d.span is None or d.span.line >= extra_line_start]

    # ------------------------------------------------------------------ one input

    def handle(self, line: str) -> str:
        line = line.strip()
        if not line or line.startswith("#"):
            return ""
        if line.startswith(":"):
            cmd, _, rest = line[1:].partition(" ")
            if "\n" in cmd:
                cmd, _, more = cmd.partition("\n")
                rest = more + " " + rest
            handler = getattr(self, "cmd_" + cmd, None)
            if handler is None:
                return f"unknown command :{cmd} (try :help)"
            return handler(rest.strip())
        from ..syntax import ast
        from ..syntax.parser import parse_repl_input

        node, diags = parse_repl_input(line, DISPLAY)
        if node is None or any(d.is_error for d in diags):
            return render_text(diags, {DISPLAY: line}).rstrip()
        if isinstance(node, ast.Export):
            return "exports are not run in the REPL; use :run EXPR to PATH"
        start = len(self.text().splitlines()) + 1
        if isinstance(node, (ast.Let, ast.Def, ast.Param, ast.Import, ast.FromImport)):
            program = self.load(line)
            new = self.new_diagnostics(program.diagnostics, start)
            if any(d.is_error for d in new):
                return render_text(new, program.sources).rstrip()
            self.statements.append(line)
            self.program = program
            if isinstance(node, ast.Let):
                return self.describe_name(node.name)
            return render_text(new, program.sources).rstrip() if new else ""
        return self.cmd_type(line)

    def value_of(self, expr: str):
        # The expression goes on a line of its own (newlines never matter in the grammar), so a
        # diagnostic shows the user's text, not the binding wrapped around it.
        program = self.load(f"let __it =\n{expr}")
        start = len(self.text().splitlines()) + 2
        new = self.new_diagnostics(program.diagnostics, start)
        if any(d.is_error for d in new):
            return None, render_text(new, program.sources).rstrip()
        return program.names.get("__it"), None

    def describe_name(self, name: str) -> str:
        value, err = self.value_of(name)
        return err if err else f"{name}: {describe(value)}"

    def planned(self, expr: str, path: str, *, trace: bool = False) -> tuple[pipeline.Planned | None, str]:
        """The session with `export EXPR to PATH` added, planned; or the diagnostics as text."""
        from ..syntax.printer import quote

        start = len(self.text().splitlines()) + 1
        planned = pipeline.plan(self.load(f"export\n{expr}\nto {quote(path)}", expect_exports=True),
                                trace=trace)
        if not planned.ok:
            new = self.new_diagnostics(planned.diagnostics, start)
            return None, render_text(new or planned.diagnostics, planned.sources).rstrip()
        return planned, ""

    # ------------------------------------------------------------------ commands

    def cmd_help(self, rest: str) -> str:
        return HELP.rstrip()

    def cmd_quit(self, rest: str) -> str:
        raise EOFError

    cmd_q = cmd_exit = cmd_quit

    @classmethod
    def commands(cls) -> list[str]:
        """Every meta-command name (aliases included)."""
        return sorted(n[4:] for n in dir(cls) if n.startswith("cmd_"))

    def names(self) -> dict[str, object]:
        """The names bound in the session (by `let`, `def`, `param`, imports) and their values."""
        if self.program is None:
            return {}
        return {k: v for k, v in self.program.names.items() if not k.startswith("__")}

    def selector_vocabulary(self) -> dict[str, str]:
        """The components, blocks and classes of the architectures of the models in scope."""
        from ..check.values import ModelValue

        out: dict[str, str] = {}
        seen: set[int] = set()
        for value in self.names().values():
            arch = getattr(getattr(value, "node", None), "arch", None) if isinstance(value, ModelValue) else None
            if arch is None or id(arch) in seen:
                continue
            seen.add(id(arch))
            for name, kind in arch.vocabulary().items():
                out.setdefault(name, f"{kind} of {arch.name}")
        return out

    def cmd_save(self, rest: str) -> str:
        from ..syntax.fmt import format_text

        parsed = _path_and_overwrite(rest, "usage: :save FILE [--overwrite]")
        if isinstance(parsed, str):
            return parsed
        name, overwrite = parsed
        if not self.statements:
            return "nothing to save: the session has no statements yet"
        path = (self.cwd / Path(name).expanduser())
        if path.exists() and not overwrite:
            return f"{name} exists; use :save {name} --overwrite to replace it"
        text = self.text()
        formatted, _ = format_text(text, str(path))
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(formatted if formatted is not None else text, encoding="utf-8")
        except OSError as exc:
            return f"cannot write {name}: {exc.strerror or exc}"
        n = len(self.statements)
        return f"saved {n} statement{'s' if n != 1 else ''} to {name}"

    def cmd_session(self, rest: str) -> str:
        return self.text().rstrip() or "(empty)"

    def cmd_type(self, rest: str) -> str:
        value, err = self.value_of(rest)
        return err if err else describe(value)

    def cmd_keys(self, rest: str) -> str:
        from ..check.values import ModelValue, a_type

        expr, glob = _split_last(rest)
        if not glob or "*" not in glob:
            expr, glob = rest, "*"
        value, err = self.value_of(expr)
        if err:
            return err
        if not isinstance(value, ModelValue):
            return f"{a_type(value)} has no keys"
        keys = [k for k in value.node.keys if fnmatch.fnmatchcase(k, glob)]
        shown = [f"  {k}  {value.node.keys[k].dtype} {list(value.node.keys[k].shape)}" for k in keys[:40]]
        more = [f"  ... {len(keys) - 40} more"] if len(keys) > 40 else []
        return "\n".join([f"{len(keys)} keys"] + shown + more)

    def cmd_explain(self, rest: str) -> str:
        from ..commands.plan import explain_text

        expr, key = _split_last(rest)
        if not key:
            return "usage: :explain EXPR KEY"
        planned, err = self.planned(expr, str(self.cwd / "repl.safetensors"), trace=True)
        return err if planned is None else explain_text(planned, key).rstrip()

    def cmd_plan(self, rest: str) -> str:
        from ..commands.plan import plan_text
        from ..graph.lower import filter_keys

        expr, glob = _split_last(rest)
        if not glob or "*" not in glob:
            expr, glob = rest, None
        planned, err = self.planned(expr, str(self.cwd / "repl.safetensors"))
        return err if planned is None else plan_text(planned, filter_keys(planned.plan, glob)).rstrip()

    def cmd_run(self, rest: str) -> str:
        cuts = list(re.finditer(r"\s+to\s+", rest))
        expr, sep, target = (rest[:cuts[-1].start()], " to ", rest[cuts[-1].end():]) if cuts else (rest, "", "")
        usage = "usage: :run EXPR to PATH [--overwrite]"
        parsed = _path_and_overwrite(target, usage)
        if isinstance(parsed, str):
            return parsed
        if not sep or not expr.strip():
            return usage
        name, overwrite = parsed
        planned, err = self.planned(expr, str((self.cwd / name).resolve()))
        if planned is None:
            return err
        result = pipeline.execute(planned, overwrite=overwrite)
        if not result.ok:
            return render_text([d for d in result.diagnostics if d.is_error], planned.sources).rstrip()
        from ..commands.output import written_line

        return "\n".join(written_line(o) for o in planned.plan.outputs)


def _path_and_overwrite(text: str, usage: str) -> tuple[str, bool] | str:
    """`PATH [--overwrite]` (PATH may be quoted) as (PATH, overwrite), or the usage line saying why not."""
    try:
        words = shlex.split(text)
    except ValueError as exc:
        return f"{usage} ({exc})"
    flags = [w for w in words if w.startswith("--")]
    paths = [w for w in words if not w.startswith("--")]
    unknown = [f for f in flags if f != "--overwrite"]
    if len(paths) != 1 or unknown:
        return usage + (f" (unknown option {unknown[0]})" if unknown else "")
    return paths[0], "--overwrite" in flags


def answer(session: "Session", text: str) -> bool:
    """Handle one input and print its answer; False when the session is to end."""
    try:
        out = session.handle(text)
    except EOFError:
        return False
    except KeyboardInterrupt:
        out = "interrupted"
    if out:
        print(out, flush=True)
    return True


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
    from ..check.values import HyperValue, ListValue, ModelValue, show_scalar, type_name

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


def incomplete(text: str) -> bool:
    """Whether `text` has a bracket, brace or parenthesis still open (outside strings and
    comments), so that the input goes on on the next line."""
    depth = 0
    in_string = False
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if in_string:
            if c == "\\":
                i += 1
            elif c == '"' or c == "\n":
                in_string = False
        elif c == '"':
            in_string = True
        elif c == "#":
            j = text.find("\n", i)
            i = n if j < 0 else j
            continue
        elif c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
        i += 1
    return depth > 0


def run_repl(models_dir: str | None, plugins: Iterable[str] = ()) -> int:
    problems = pipeline.load_plugins(plugins)
    if problems:
        sys.stderr.write(render_text(problems))
        return 1
    session = Session(models_dir, plugins=())
    if sys.stdin.isatty() and sys.stdout.isatty():
        from .terminal import run_terminal

        return run_terminal(session)
    return run_plain(session, sys.stdin, prompts=sys.stdin.isatty())


def run_plain(session: Session, lines, *, prompts: bool = False) -> int:
    """Line by line (a pipe, a file, tests): input goes on while brackets are open."""
    pending: list[str] = []
    while True:
        if prompts:
            try:
                line = input("... " if pending else "mecha> ")
            except KeyboardInterrupt:
                print()
                pending = []
                continue
            except EOFError:
                print()
                return 0
        else:
            line = lines.readline()
            if not line:
                if not pending:
                    return 0
                line = ""
                eof = True
            else:
                eof = False
            line = line.rstrip("\n")
        pending.append(line)
        text = "\n".join(pending)
        if incomplete(text) and not (not prompts and eof):
            continue
        pending = []
        if not answer(session, text):
            return 0
        if not prompts and eof:
            return 0
