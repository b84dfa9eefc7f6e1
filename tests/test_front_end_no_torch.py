"""The front end (parse, check, fmt, info, the CLI module) never imports torch."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parent.parent

PROBE = """
import sys
from mechalang import cli
argv = sys.argv[1:]
try:
    cli.app(argv)
except SystemExit as e:
    code = e.code
print("TORCH" if "torch" in sys.modules else "NO-TORCH", code)
"""


def probe(*args: str, cwd: Path = ROOT, input: str | None = None) -> str:
    r = subprocess.run([sys.executable, "-c", PROBE, *args], cwd=cwd, capture_output=True, text=True, timeout=120,
                       input=input)
    return r.stdout.strip().splitlines()[-1]


def test_import_cli_does_not_import_torch():
    r = subprocess.run([sys.executable, "-c", "import sys, mechalang.cli, mechalang.commands; "
                        "print('torch' in sys.modules)"], capture_output=True, text=True, timeout=60)
    assert r.stdout.strip() == "False"


def test_check_info_fmt_do_not_import_torch(golden_workspace, tmp_path):
    golden = golden_workspace
    assert probe("check", "check/ok_weighted_sum.mecha", "--models-dir", "models", cwd=golden) == "NO-TORCH 0"
    assert probe("check", "check/ok_task_arithmetic.mecha", "--models-dir", "models", cwd=golden) == "NO-TORCH 0"
    assert probe("info") == "NO-TORCH 0"
    assert probe("info", "--methods") == "NO-TORCH 0"
    f = tmp_path / "x.mecha"
    f.write_text("let x = 1\n")
    assert probe("fmt", "--check", str(f)) == "NO-TORCH 0"
    assert probe("fmt", "--color", str(f)) == "NO-TORCH 0"


def test_repl_does_not_import_torch_until_a_merge_runs(golden_workspace):
    # (the terminal front end is checked the same way through a pseudo-terminal in test_repl_terminal.py)
    lines = ['let a = model("a.safetensors")', 'let b = model("b.safetensors")', "let w = {",
             "  IN00: 0.3, default: 0.5", "}", ":type weighted_sum(a, b, alpha=w)", ':keys a "*.time_embed*"',
             ":plan weighted_sum(a, b) *.time_embed.0.weight", ":session", ":help"]
    assert probe("repl", "--models-dir", "models", cwd=golden_workspace,
                 input="\n".join(lines) + "\n") == "NO-TORCH 0"
    import importlib.util

    assert importlib.util.find_spec("prompt_toolkit") is not None
    r = subprocess.run([sys.executable, "-c", "import sys, mechalang.repl.terminal, mechalang.commands.highlight; "
                        "print('torch' in sys.modules)"], capture_output=True, text=True, timeout=60)
    assert r.stdout.strip() == "False"


IDLE_PROBE = """
import sys, threading
from starlette.testclient import TestClient
from mechalang.ui import create_app
app = create_app(sys.argv[1], token="t")
c = TestClient(app, base_url="http://127.0.0.1:1")
c.cookies.set(app.state.ui.cookie, "t")
for path in ("/", "/static/app.js", "/static/style.css", "/api/models", "/api/methods", "/api/arch/sd1"):
    assert c.get(path).status_code == 200, path
r = c.post("/api/form", json={"models": ["alpha_one.safetensors", "beta_two.safetensors"], "alpha": 0.4,
                              "blocks": {"IN00": 0.2}})
assert r.json()["ok"], r.text
assert c.post("/api/check", json={"text": "let x = 1\\n"}).status_code == 200
print("TORCH" if "torch" in sys.modules else "NO-TORCH")
"""


def test_web_ui_idle_does_not_import_torch(tmp_path):
    """`mecha ui`'s app started, its pages served and a form checked: torch is not imported."""
    from mechalang.synth import make_model

    for name, seed in (("alpha_one", 1), ("beta_two", 2)):
        make_model("sd1", tmp_path / f"{name}.safetensors", dim_cap=4, dtype="float32", seed=seed)
    r = subprocess.run([sys.executable, "-c", IDLE_PROBE, str(tmp_path)], capture_output=True, text=True,
                       timeout=120)
    assert r.stdout.strip().splitlines()[-1:] == ["NO-TORCH"], r.stdout + r.stderr
