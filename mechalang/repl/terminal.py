"""The terminal side of `mecha repl` (prompt_toolkit): history kept in a file, Tab completion,
multi-line input while brackets are open, syntax highlighting, Ctrl-C drops the line, Ctrl-D leaves.

The logic (what an input does) is `repl.Session`; this module only reads lines and prints
answers. Nothing here imports torch (`:run` does, through the pipeline, when a merge runs).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Iterable

from prompt_toolkit import PromptSession
from prompt_toolkit.auto_suggest import AutoSuggestFromHistory
from prompt_toolkit.completion import Completer, Completion
from prompt_toolkit.history import FileHistory, History, InMemoryHistory
from prompt_toolkit.key_binding import KeyBindings
from prompt_toolkit.lexers import PygmentsLexer
from prompt_toolkit.styles import style_from_pygments_cls
from pygments.styles import get_style_by_name

from ..commands.highlight import BUILTINS, CONSTANTS, KEYWORDS, TYPES, MechaReplLexer, method_names
from . import Session, answer, incomplete

PROMPT = "mecha> "
CONTINUATION = "... "
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*$")
_PATH_ARG = re.compile(r'\b(?:model|lora)\(\s*"([^"\n]*)$')
_STRING = re.compile(r'"(?:[^"\\\n]|\\.)*"')


def history_path() -> Path:
    """`$MECHA_HISTORY`, else `$XDG_STATE_HOME/mechalang/repl_history` (default
    `~/.local/state/mechalang/repl_history`)."""
    given = os.environ.get("MECHA_HISTORY")
    if given:
        return Path(given).expanduser()
    state = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(state) / "mechalang" / "repl_history"


def open_history() -> History:
    path = history_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(exist_ok=True)
        return FileHistory(str(path))
    except OSError:
        return InMemoryHistory()  # an unwritable home: history for this session only


class MechaCompleter(Completer):
    """Names of the session, the selector names of its models' architectures, merge methods,
    builtins, keywords and types; meta-commands after `:`; files inside `model("...")`."""

    def __init__(self, session: Session):
        self.session = session

    def get_completions(self, document, complete_event):
        before = document.text_before_cursor
        m = re.match(r"\s*:([A-Za-z_]*)$", before)
        if m:
            word = m.group(1)
            for cmd in self.session.commands():
                if cmd.startswith(word):
                    yield Completion(cmd, -len(word), display=":" + cmd, display_meta="command")
            return
        line = before.rsplit("\n", 1)[-1]
        m = _PATH_ARG.search(line)
        if m:
            yield from self.path_completions(m.group(1))
            return
        stripped = _STRING.sub('""', line)
        if stripped.count('"') % 2 or "#" in stripped:
            return  # inside a string or a comment
        m = _WORD.search(line)
        word = m.group(0) if m else ""
        if not word and not complete_event.completion_requested:
            return
        if word and m.start() > 0 and line[m.start() - 1].isdigit():
            return
        for name, meta in self.candidates():
            if name.startswith(word) and name != word:
                yield Completion(name, -len(word), display_meta=meta)

    def candidates(self) -> Iterable[tuple[str, str]]:
        seen: set[str] = set()

        def fresh(names, meta):
            for n in names:
                if n not in seen:
                    seen.add(n)
                    yield n, meta

        from ..check.values import a_type

        names = self.session.names()
        for name, value in names.items():
            if name not in seen:
                seen.add(name)
                try:
                    meta = a_type(value)
                except Exception:
                    meta = "name"
                yield name, meta
        for name, kind in self.session.selector_vocabulary().items():
            if name not in seen:
                seen.add(name)
                yield name, kind
        yield from fresh(sorted(method_names()), "method")
        yield from fresh(BUILTINS, "builtin")
        yield from fresh(KEYWORDS + CONSTANTS, "keyword")
        yield from fresh(TYPES, "type")

    def path_completions(self, partial: str) -> Iterable[Completion]:
        from ..paths import models_dirs

        expanded = os.path.expanduser(partial)
        folder, base = os.path.split(expanded)
        if os.path.isabs(expanded):
            roots = [Path(folder)]
        else:
            roots = [self.session.cwd / folder] + [d / folder for d in models_dirs(self.session.models_dir)]
        prefix = partial[: len(partial) - len(base)]
        shown: set[str] = set()
        for root in roots:
            try:
                entries = sorted(os.scandir(root), key=lambda e: e.name)
            except OSError:
                continue
            for e in entries:
                if not e.name.startswith(base) or (e.name.startswith(".") and not base.startswith(".")):
                    continue
                is_dir = e.is_dir()
                text = prefix + e.name + ("/" if is_dir else "")
                if text in shown:
                    continue
                shown.add(text)
                yield Completion(text, -len(partial), display=e.name + ("/" if is_dir else ""),
                                 display_meta="folder" if is_dir else _size(e))
                if len(shown) >= 500:
                    return


def _size(entry: os.DirEntry) -> str:
    try:
        from ..units import format_bytes

        return format_bytes(entry.stat().st_size)
    except (OSError, ImportError):
        return ""


def key_bindings() -> KeyBindings:
    kb = KeyBindings()

    @kb.add("enter")
    def _(event):
        buf = event.current_buffer
        if buf.complete_state and buf.complete_state.current_completion is not None:
            buf.apply_completion(buf.complete_state.current_completion)
            return
        if buf.document.is_cursor_at_the_end and incomplete(buf.text):
            buf.insert_text("\n")
        else:
            buf.validate_and_handle()

    @kb.add("escape", "enter")
    def _(event):  # Alt-Enter: a new line even when the input is complete
        event.current_buffer.insert_text("\n")

    return kb


def make_prompt_session(session: Session) -> PromptSession:
    try:
        style = style_from_pygments_cls(get_style_by_name("monokai"))
    except Exception:  # pragma: no cover
        style = None
    return PromptSession(
        history=open_history(),
        completer=MechaCompleter(session),
        complete_while_typing=False,
        lexer=PygmentsLexer(MechaReplLexer),
        style=style,
        include_default_pygments_style=False,
        multiline=True,
        prompt_continuation=lambda width, line_number, soft_wrap: CONTINUATION.rjust(width),
        key_bindings=key_bindings(),
        auto_suggest=AutoSuggestFromHistory(),
        enable_history_search=False,
    )


def run_terminal(session: Session) -> int:
    prompt = make_prompt_session(session)
    print("mechalang REPL — :help for commands, Tab completes, Ctrl-C drops the line, Ctrl-D leaves")
    while True:
        try:
            text = prompt.prompt(PROMPT)
        except KeyboardInterrupt:
            continue
        except EOFError:
            return 0
        if not answer(session, text):
            return 0
