"""`mecha` run in-process by Typer's test runner, from a chosen working folder: what CLI tests call
(tests that need a real process use `python -m mechalang` instead)."""

from __future__ import annotations

import os
from pathlib import Path

from typer.testing import CliRunner

from mechalang.cli import app

runner = CliRunner()


def mecha(*args: str, cwd: Path | None = None):
    """The result of `mecha ARGS`, run in `cwd` (the working folder is restored after)."""
    old = os.getcwd()
    if cwd is not None:
        os.chdir(cwd)
    try:
        return runner.invoke(app, list(args), catch_exceptions=False)
    finally:
        os.chdir(old)
