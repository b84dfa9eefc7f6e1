"""Golden diagnostics of `mecha check`: a recipe in, the exact rendered output out.

Each `golden/check/NAME.mecha` is checked from a copy of the `golden/` folder (with the small models
in `models/`, so nothing is written into the repository) with `--models-dir models`;
a first line `# args: ...` adds command-line arguments. The expected text (exit code, stdout,
stderr) is `NAME.out`; `MECHA_UPDATE_GOLDEN=1 pytest tests/test_golden_check.py` rewrites them.
"""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from mechalang.commands.check import check_command

from .conftest import GOLDEN
from .golden_util import assert_matches_golden

CASES = sorted(p for p in (GOLDEN / "check").glob("*.mecha"))


def run_check(case: Path, workspace: Path, capsys, monkeypatch) -> str:
    monkeypatch.chdir(workspace)
    monkeypatch.setenv("MECHA_PATH", "")
    monkeypatch.delenv("MECHA_MODELS_DIR", raising=False)
    first = case.read_text().splitlines()[0] if case.read_text() else ""
    args = shlex.split(first[len("# args:"):]) if first.startswith("# args:") else []
    sets = [args[i + 1] for i, a in enumerate(args) if a == "--set"]
    strict = "--strict" in args
    fmt = "json" if "--json" in args else "text"
    code = check_command(f"check/{case.name}", sets=sets, models_dir="models", strict=strict, format=fmt)
    out, err = capsys.readouterr()
    return f"exit {code}\n--- stdout\n{out}--- stderr\n{err}"


@pytest.mark.parametrize("case", CASES, ids=[c.stem for c in CASES])
def test_golden(case: Path, golden_workspace, capsys, monkeypatch):
    assert_matches_golden(run_check(case, golden_workspace, capsys, monkeypatch), case.with_suffix(".out"))


def test_there_are_enough_goldens():
    assert len(CASES) >= 40
