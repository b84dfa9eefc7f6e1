"""`mecha fmt`: in-place atomic rewrites, --check, --diff, syntax errors, JSON diagnostics."""

from __future__ import annotations

import io
import json
import os
import stat
from collections import Counter

import pytest

from mechalang.commands.fmt import fmt_command
from mechalang.syntax.fmt import format_text
from mechalang.syntax.parser import parse

UGLY = "let x=f( a,k = 1 )   # keep me\n\n\n\nexport x to \"o\" as fp16"
PRETTY = 'let x = f(a, k=1)  # keep me\n\nexport x to "o" as fp16\n'


def run(files, *, check=False, diff=False, format="text"):
    out, err = io.StringIO(), io.StringIO()
    code = fmt_command([str(f) for f in files], check=check, diff=diff, format=format, stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def write(path, text: str, newline: str = "\n"):
    path.write_bytes(text.replace("\n", newline).encode("utf-8"))
    return path


def test_format_text():
    assert format_text(UGLY) == (PRETTY, [])
    new, diags = format_text("let x = (", "a.mecha")
    assert new is None and diags[0].code == "E0104"


def test_formats_in_place(tmp_path):
    p = write(tmp_path / "a.mecha", UGLY)
    code, out, err = run([p])
    assert (code, out, err) == (0, "", "")
    assert p.read_text() == PRETTY
    # No temporary file is left behind.
    assert sorted(os.listdir(tmp_path)) == ["a.mecha"]


def test_canonical_file_is_not_touched(tmp_path):
    p = write(tmp_path / "a.mecha", PRETTY)
    os.utime(p, (1_000_000, 1_000_000))
    code, out, err = run([p])
    assert (code, out, err) == (0, "", "")
    assert os.stat(p).st_mtime == 1_000_000


def test_permissions_and_crlf_are_kept(tmp_path):
    p = write(tmp_path / "a.mecha", UGLY, newline="\r\n")
    os.chmod(p, 0o640)
    assert run([p])[0] == 0
    assert p.read_bytes() == PRETTY.replace("\n", "\r\n").encode()
    assert stat.S_IMODE(os.stat(p).st_mode) == 0o640
    # A formatted CRLF file is left alone.
    os.utime(p, (1_000_000, 1_000_000))
    assert run([p], check=True)[0] == 0
    assert os.stat(p).st_mtime == 1_000_000


def test_check_names_files_and_writes_nothing(tmp_path):
    ugly = write(tmp_path / "ugly.mecha", UGLY)
    pretty = write(tmp_path / "pretty.mecha", PRETTY)
    code, out, err = run([ugly, pretty], check=True)
    assert code == 1
    assert out == f"would reformat {ugly}\n"
    assert "1 of 2 files would be reformatted" in err
    assert ugly.read_text() == UGLY
    assert run([pretty], check=True)[0] == 0


def test_diff_prints_a_unified_diff_and_writes_nothing(tmp_path):
    p = write(tmp_path / "a.mecha", UGLY)
    code, out, err = run([p], diff=True)
    assert code == 0 and err == ""
    assert out.startswith(f"--- {p} (original)\n+++ {p} (formatted)\n")
    assert "-let x=f( a,k = 1 )   # keep me\n" in out
    assert "+let x = f(a, k=1)  # keep me\n" in out
    assert p.read_text() == UGLY
    # --check --diff: both, and exit 1.
    code, out, _ = run([p], diff=True, check=True)
    assert code == 1 and "+let x" in out and f"would reformat {p}" in out


def test_syntax_error_is_reported_and_file_untouched(tmp_path):
    p = write(tmp_path / "bad.mecha", "let w = {a: 1 b: 2}\n")
    code, out, err = run([p])
    assert code == 1 and out == ""
    assert err.startswith("error[E0107]: missing `,` between map entries\n")
    assert f"--> {p}:1:15" in err
    assert "1 | let w = {a: 1 b: 2}" in err
    assert p.read_text() == "let w = {a: 1 b: 2}\n"


def test_json_diagnostics(tmp_path):
    bad = write(tmp_path / "bad.mecha", "let x =")
    missing = tmp_path / "missing.mecha"
    code, out, err = run([bad, missing, tmp_path], format="json")
    assert code == 1 and out == ""
    diags = json.loads(err)
    assert [d["code"] for d in diags] == ["E0104", "E0001", "E0002"]
    assert diags[0]["span"] == {"file": str(bad), "line": 1, "col": 8, "end_line": 1, "end_col": 9}


def test_other_files_are_still_formatted_after_an_error(tmp_path):
    bad = write(tmp_path / "bad.mecha", "let x = )")
    good = write(tmp_path / "good.mecha", UGLY)
    code, _, err = run([bad, good])
    assert code == 1 and "E0108" in err
    assert good.read_text() == PRETTY


def test_unreadable_inputs(tmp_path):
    latin1 = tmp_path / "latin1.mecha"
    latin1.write_bytes(b"let caf\xe9 = 1\n")
    nul = tmp_path / "nul.mecha"
    nul.write_bytes(b"let a\x00 = 1\n")
    code, out, err = run([latin1, nul, tmp_path / "nope.mecha", tmp_path])
    assert code == 1 and out == ""
    for code_ in ("E0004", "E0005", "E0001", "E0002"):
        assert f"error[{code_}]" in err
    assert "invalid byte 0xe9 at 1:8" in err
    assert latin1.read_bytes() == b"let caf\xe9 = 1\n"


def test_comments_survive_fmt(tmp_path):
    src = ("# head\nparam a = 1 # a\nlet w = { # open\n  x: 1, # x\n  # before y\n  y: f(1, # one\n 2),\n"
           "  # dangling\n}\ndef f(p, # p\n q) = { let z = p + # inner\n q; z } # end\n# tail\n")
    p = write(tmp_path / "c.mecha", src)
    assert run([p])[0] == 0
    new = p.read_text()
    before, _ = parse(src, "c")
    after, _ = parse(new, "c")
    assert after == before
    assert Counter(c.text for c in after.comments) == Counter(c.text for c in before.comments)
    assert run([p], check=True)[0] == 0


def test_a_printer_that_loses_a_comment_is_caught(tmp_path, monkeypatch):
    import mechalang.syntax.fmt as fmt_module

    monkeypatch.setattr(fmt_module, "print_module", lambda m: "let x = f(a, k=1)\n")
    p = write(tmp_path / "a.mecha", UGLY)
    code, _, err = run([p])
    assert code == 1 and "error[E0008]" in err
    assert p.read_text() == UGLY


def test_write_failure_is_a_diagnostic(tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root can write into read-only folders")
    folder = tmp_path / "ro"
    folder.mkdir()
    p = write(folder / "a.mecha", UGLY)
    os.chmod(folder, 0o500)
    try:
        code, _, err = run([p])
    finally:
        os.chmod(folder, 0o700)
    assert code == 1 and "E0007" in err
    assert p.read_text() == UGLY


def test_cli_fmt(tmp_path):
    from typer.testing import CliRunner

    from mechalang.cli import app

    p = write(tmp_path / "a.mecha", UGLY)
    result = CliRunner().invoke(app, ["fmt", "--check", str(p)])
    assert result.exit_code == 1
    result = CliRunner().invoke(app, ["fmt", str(p)])
    assert result.exit_code == 0
    assert p.read_text() == PRETTY
