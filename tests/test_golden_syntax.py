"""Golden syntax diagnostics: `tests/golden/syntax/NAME.mecha` and its expected `NAME.out`.

For a file whose name starts with `ok_`, `NAME.out` is its canonical formatting (`print_module`).
For any other file, `NAME.out` is exactly `render_text(diagnostics, {"syntax/NAME.mecha": text})`
for the diagnostics of `read_source` then `parse`, spans naming the file `syntax/NAME.mecha`.

Regenerate the `.out` files with `MECHA_UPDATE_GOLDEN=1 pytest tests/test_golden_syntax.py`, then
read the diff: every change must be one you mean.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mechalang.diagnostics import render_text
from mechalang.syntax.parser import parse
from mechalang.syntax.printer import print_module
from mechalang.syntax.source import read_source

GOLDEN = Path(__file__).parent / "golden"
SYNTAX = GOLDEN / "syntax"
UPDATE = os.environ.get("MECHA_UPDATE_GOLDEN") == "1"
NAMES = sorted(p.stem for p in SYNTAX.glob("*.mecha"))


def expected_output(name: str) -> str:
    rel = f"syntax/{name}.mecha"
    text, diags = read_source(rel)  # relative to tests/golden (the test changes into it)
    if text is None:
        # Show the line anyway, with undecodable bytes replaced.
        shown = (GOLDEN / rel).read_bytes().decode("utf-8", errors="replace").replace("\x00", "\u2400")
        return render_text(diags, {rel: shown})
    module, diags = parse(text, rel)
    if name.startswith("ok_"):
        assert diags == [], render_text(diags, {rel: text})
        return print_module(module)
    assert module is None and diags, f"{rel} is expected to have a syntax error"
    return render_text(diags, {rel: text})


@pytest.mark.parametrize("name", NAMES)
def test_golden_syntax(name, monkeypatch):
    monkeypatch.chdir(GOLDEN)
    actual = expected_output(name)
    out = SYNTAX / f"{name}.out"
    if UPDATE:
        out.write_text(actual, encoding="utf-8", newline="\n")
        return
    assert out.exists(), f"{out} is missing; run with MECHA_UPDATE_GOLDEN=1 to create it"
    assert actual == out.read_text(encoding="utf-8")


def test_there_are_enough_distinct_error_goldens():
    errors = [n for n in NAMES if not n.startswith("ok_")]
    assert len(errors) >= 12
    codes = set()
    for name in errors:
        out = SYNTAX / f"{name}.out"
        if out.exists():
            first = out.read_text(encoding="utf-8").split("\n", 1)[0]
            codes.add(first.split("]", 1)[0])
    assert len(codes) >= 12, codes
