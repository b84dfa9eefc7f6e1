"""`mecha fmt FILE...`: rewrite recipes in their canonical form.

For each file: read, parse, print (syntax/fmt.py). A file that is already canonical is left alone
(not even touched); a changed one is replaced atomically (a temporary file in the same folder,
then `os.replace`), keeping its permissions.

`--check`: write nothing, name the files that would change, exit 1 if any would.
`--diff`: write nothing, print a unified diff of each change to stdout.
`--color`: write nothing, print each file's canonical form to stdout, syntax-highlighted.
A file that cannot be read or has syntax errors: its diagnostics go to stderr (as text, or as one
JSON array with `--format json`), the file is untouched, and the exit code is 1.
"""

from __future__ import annotations

import difflib
import os
import sys
import tempfile
from typing import TextIO

from ..compat.sdmecha import not_mechalang
from ..diagnostics import Diagnostic, codes, error, render_json, render_text
from ..syntax.fmt import format_text
from ..syntax.source import read_source


def fmt_command(files: list[str], *, check: bool, diff: bool, format: str, color: bool = False,
                stdout: TextIO | None = None, stderr: TextIO | None = None) -> int:
    out = stdout if stdout is not None else sys.stdout
    err = stderr if stderr is not None else sys.stderr
    as_json = format == "json"
    json_diags: list[Diagnostic] = []
    status = 0
    changed = 0

    def report(diags: list[Diagnostic], path: str, text: str | None) -> None:
        if as_json:
            json_diags.extend(diags)
        else:
            sources = {path: text} if text is not None else {}
            err.write(render_text(diags, sources))

    for path in files:
        text, diags = read_source(path)
        if text is None:
            report(diags, path, _display_text(path))
            status = 1
            continue
        sdmecha = not_mechalang(text, path, "mecha fmt")
        if sdmecha is not None:
            report([sdmecha], path, text)
            status = 1
            continue
        new, diags = format_text(text, path)
        if new is None:
            report(diags, path, text)
            status = 1
            continue
        if color:
            from .highlight import highlight_terminal

            out.write(highlight_terminal(new))
            continue
        if new == text:
            continue
        changed += 1
        if diff:
            out.writelines(difflib.unified_diff(
                text.splitlines(keepends=True), new.splitlines(keepends=True),
                fromfile=f"{path} (original)", tofile=f"{path} (formatted)"))
            if not new.endswith("\n") or not text.endswith("\n"):
                out.write("\n")
        if check:
            out.write(f"would reformat {path}\n")
            status = 1
            continue
        if diff:
            continue
        write_error = _write_atomically(path, new)
        if write_error is not None:
            report([write_error], path, None)
            status = 1
    if as_json and json_diags:
        err.write(render_json(json_diags) + "\n")
    if check and not as_json:
        n = len(files)
        if changed:
            err.write(f"{changed} of {n} file{'s' if n != 1 else ''} would be reformatted\n")
    return status


def _display_text(path: str) -> str | None:
    """The text to show under a diagnostic about an unreadable file (bad bytes replaced)."""
    try:
        with open(path, "rb") as f:
            data = f.read(1 << 20)
    except (OSError, ValueError):
        return None
    return data.decode("utf-8", errors="replace").replace("\x00", "\u2400")


def _write_atomically(path: str, text: str) -> Diagnostic | None:
    folder = os.path.dirname(os.path.abspath(path))
    tmp = None
    try:
        mode = os.stat(path).st_mode & 0o7777
        fd, tmp = tempfile.mkstemp(prefix=".mecha-fmt-", suffix=".tmp", dir=folder)
        with os.fdopen(fd, "wb") as f:
            f.write(text.encode("utf-8"))
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
        tmp = None
        return None
    except OSError as e:
        return error(codes.FMT_WRITE_FAILED, f"cannot write `{path}`: {e.strerror or e}",
                     help="the file is left unchanged")
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass
