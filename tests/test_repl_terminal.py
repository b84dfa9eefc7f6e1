"""`mecha repl` in a terminal: the real program driven through a pseudo-terminal (pexpect), plus
the completer, the bracket counter and the line-by-line mode in-process."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mechalang.repl import Session, incomplete, run_plain

pexpect = pytest.importorskip("pexpect")

ROOT = Path(__file__).parent.parent
UP = "\x1b[A"
PROMPT = "mecha>"  # prompt_toolkit draws the trailing space as a cursor move


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    from mechalang.synth import make_model

    folder = tmp_path_factory.mktemp("repl_models")
    make_model("sd1", folder / "a.safetensors", dim_cap=8, dtype="float32", seed=11)
    make_model("sd1", folder / "b.safetensors", dim_cap=8, dtype="float32", seed=12)
    return folder


def spawn(cwd: Path, history: Path, *args: str):
    env = dict(os.environ, MECHA_HISTORY=str(history), TERM="xterm", PROMPT_TOOLKIT_NO_CPR="1",
               PYTHONPATH=str(ROOT), MECHA_MODELS_DIR="")
    child = pexpect.spawn(sys.executable, ["-m", "mechalang", "repl", *args], env=env, cwd=str(cwd),
                          timeout=20, encoding="utf-8", dimensions=(40, 160))
    child.expect(PROMPT)
    return child


def enter(child, line: str, *expect: str) -> None:
    """Type a line and wait for the answer (`expect`: patterns found only in it, not in the echo
    of the line, which prompt_toolkit redraws after the prompt) and the next prompt."""
    child.send(line + "\r")
    for e in expect:
        child.expect(e)
    child.expect(PROMPT)


def quit_(child) -> None:
    child.sendeof()
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0


def test_history_is_kept_across_sessions(models, tmp_path):
    history = tmp_path / "state" / "hist"  # the folder is created as needed
    child = spawn(models, history)
    enter(child, "0.5 + 0.25", r"float = 0\.75")
    quit_(child)
    assert "0.5 + 0.25" in history.read_text()
    child = spawn(models, history)
    child.send(UP)
    time.sleep(0.3)
    child.send("\r")
    child.expect(r"float = 0\.75")
    child.expect(PROMPT)
    quit_(child)


def test_tab_completes_block_names_and_model_paths(models, tmp_path):
    child = spawn(models, tmp_path / "hist")
    child.send('let a = model("a.safe\t')  # one candidate: inserted
    time.sleep(0.3)
    child.send('")\r')
    child.expect(r"a: Model\[sd1\] from a\.safetensors")
    child.expect(PROMPT)
    child.send("let w = {OUT1\t")  # several: a menu
    child.expect("block of sd1")
    child.send("1: 0.25}\r")
    child.expect("w: Hyper with 1 rule")
    child.expect(PROMPT)
    enter(child, ":session", r"OUT11: 0\.25")
    quit_(child)


def test_multiline_let_and_ctrl_c(models, tmp_path):
    child = spawn(models, tmp_path / "hist")
    child.send("let w = {\r")
    child.expect(r"\.\.\.")  # the continuation prompt: the brace is open
    child.send("IN00: 0.3, default: 0.5}\r")
    child.expect("w: Hyper with 2 rules")
    child.expect(PROMPT)
    child.send("let half = 1 +")
    child.sendintr()  # Ctrl-C drops the line, the REPL goes on
    child.expect(PROMPT)
    child.send(":session\r")
    child.expect("let w")  # the output, not the echo of the command
    child.expect(PROMPT)
    assert "default: 0.5" in child.before and "half" not in child.before
    quit_(child)


def test_run_overwrite_and_save(models, tmp_path):
    import torch
    from safetensors.torch import load_file

    out = tmp_path / "out.safetensors"
    out.write_bytes(b"old")
    child = spawn(tmp_path, tmp_path / "hist", "--models-dir", str(models))
    enter(child, 'let a = model("a.safetensors")', "Model")
    enter(child, 'let b = model("b.safetensors")', "Model")
    enter(child, ":run weighted_sum(a, b, alpha=0.3) to out.safetensors", "exists")
    enter(child, ":run weighted_sum(a, b, alpha=0.3) to out.safetensors --overwrite", "wrote out.safetensors")
    enter(child, ":save saved.mecha", "saved 2 statements")
    quit_(child)
    assert not (tmp_path / "out.safetensors --overwrite").exists()
    a, b, merged = (load_file(str(p)) for p in (models / "a.safetensors", models / "b.safetensors", out))
    assert set(merged) == set(a)
    for k, v in merged.items():
        if a[k].is_floating_point():
            torch.testing.assert_close(v, 0.7 * a[k] + 0.3 * b[k], rtol=1e-6, atol=1e-6)
    r = subprocess.run([sys.executable, "-m", "mechalang", "check", str(tmp_path / "saved.mecha"),
                        "--models-dir", str(models)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert (tmp_path / "saved.mecha").read_text() == 'let a = model("a.safetensors")\nlet b = model("b.safetensors")\n'


def test_terminal_repl_does_not_import_torch_until_a_merge_runs(models, tmp_path):
    from tests.test_front_end_no_torch import PROBE

    env = dict(os.environ, MECHA_HISTORY=str(tmp_path / "hist"), TERM="xterm", PROMPT_TOOLKIT_NO_CPR="1",
               PYTHONPATH=str(ROOT), MECHA_MODELS_DIR="")
    child = pexpect.spawn(sys.executable, ["-c", PROBE, "repl"], env=env, cwd=str(models), timeout=20,
                          encoding="utf-8", dimensions=(40, 160))
    child.expect(PROMPT)
    enter(child, 'let a = model("a.safetensors")', "Model")
    child.send("{IN0\t")
    child.expect("block of sd1")
    child.sendintr()
    child.expect(PROMPT)
    enter(child, ":plan weighted_sum(a, a) *.time_embed.0.weight", "estimated peak memory")
    child.sendeof()
    child.expect("NO-TORCH 0")
    child.expect(pexpect.EOF)


# ------------------------------------------------------------------ in-process


def test_incomplete_counts_brackets_outside_strings_and_comments():
    assert incomplete("let w = {")
    assert incomplete("f(a, [1,")
    assert not incomplete("let w = {IN00: 1}")
    assert not incomplete('let s = "{("')
    assert not incomplete("let x = 1 # {")
    assert incomplete('f("}",')


def test_plain_mode_reads_multiline_input(models, tmp_path, capsys):
    s = Session(models_dir=str(models), cwd=tmp_path)
    text = 'let a = model("a.safetensors")\nlet w = {\n  IN00: 0.3,\n  default: 0.5\n}\n:type w\n:help\n'
    assert run_plain(s, io.StringIO(text)) == 0
    out = capsys.readouterr().out
    assert "w: Hyper with 2 rules" in out
    for cmd in ("type", "keys", "explain", "plan", "run", "session", "save", "help", "quit"):
        assert f":{cmd}" in out


def test_completer(models, tmp_path):
    from prompt_toolkit.completion import CompleteEvent
    from prompt_toolkit.document import Document

    from mechalang.repl.terminal import MechaCompleter

    (tmp_path / "sub").mkdir()
    s = Session(models_dir=str(models), cwd=tmp_path)
    s.handle('let alpha_model = model("a.safetensors")')
    c = MechaCompleter(s)

    def texts(before: str) -> list[str]:
        return [x.text for x in c.get_completions(Document(before), CompleteEvent(completion_requested=True))]

    assert "alpha_model" in texts("weighted_sum(alp")
    assert "weighted_sum" in texts("weighted_s")
    assert {"IN00", "IN01"} <= set(texts("{IN0"))
    assert "attn2" in texts("{attn")
    assert "clip_l" in texts("{clip")
    assert "let" in texts("le")
    assert "save" in texts(":sa") and "run" in texts(":r")
    assert texts('model("a.s') == ["a.safetensors"]  # from --models-dir
    assert texts('lora("su') == ["sub/"]  # from the working folder
    assert texts('let s = "weighted_s') == []  # inside another string: nothing


def test_lexer_and_fmt_color(tmp_path):
    from pygments.token import Comment, Keyword, Name, Number, String
    from typer.testing import CliRunner

    from mechalang.cli import app
    from mechalang.commands.highlight import MechaLexer

    src = '# c\nlet a = model("a.safetensors")\nexport weighted_sum(a, a, alpha={IN00..OUT11: 0.3, attn2: 1}) to "o"\n'
    tokens = {(t, v) for t, v in MechaLexer().get_tokens(src) if v.strip()}
    for expected in [(Comment.Single, "# c"), (Keyword.Declaration, "let"), (Name.Variable, "a"),
                     (Name.Builtin, "model"), (String.Double, '"a.safetensors"'), (Keyword, "export"),
                     (Name.Function, "weighted_sum"), (Name.Constant, "IN00"), (Name.Constant, "OUT11"),
                     (Name.Label, "attn2"), (Number.Float, "0.3"), (Keyword, "to")]:
        assert expected in tokens
    f = tmp_path / "x.mecha"
    f.write_text("let  x=weighted_sum( 1,2 )\n")
    result = CliRunner().invoke(app, ["fmt", "--color", str(f)])
    assert result.exit_code == 0
    assert "\x1b[" in result.output
    assert "let x = weighted_sum(1, 2)" in re.sub(r"\x1b\[[0-9;]*m", "", result.output)
    assert f.read_text() == "let  x=weighted_sum( 1,2 )\n"  # --color writes nothing
