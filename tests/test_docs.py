"""Every code block of the user's documentation (README.md and docs/*.md) runs, and the docs link
only to files inside the project.

How blocks run, by their info string (the first word is the language GitHub highlights):

    ```mecha            a recipe: `mecha check` must find no error (warnings are fine).
    ```mecha fails=E0231  a recipe that must fail with that code.
    ```python           run, in order, in one namespace per document.
    ```sh               each command runs: `mecha ...` (exit 0 unless the line ends with
                        `# fails`), `python ...`; `pip ...` and `python -m pytest` are what CI
                        itself runs, so they are skipped here. `A && B` runs A, then B.
    ```toml             only stored (when it names a file).
    anything else       output shown to the reader; not run.

A block whose first line is `# file: PATH` is also written to PATH, so later blocks can import or
load it. Every document runs in a fresh folder holding the generated example models in `models/`
and a copy of `examples/` (with its models), which is what the documents' paths refer to.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mechalang import pipeline
from mechalang.cli import app

ROOT = Path(__file__).parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```([^\n`]*)\n(.*?)^```\s*$", re.S | re.M)


@dataclass(frozen=True)
class Block:
    doc: Path
    line: int
    info: str
    text: str

    @property
    def lang(self) -> str:
        return self.info.split()[0] if self.info.split() else ""

    @property
    def file(self) -> str | None:
        first = self.text.splitlines()[0] if self.text else ""
        m = re.match(r"#\s*file:\s*(\S+)", first)
        return m.group(1) if m else None

    def where(self) -> str:
        return f"{self.doc.relative_to(ROOT)}:{self.line}"


def blocks_of(doc: Path) -> list[Block]:
    text = doc.read_text(encoding="utf-8")
    return [Block(doc, text.count("\n", 0, m.start()) + 1, m.group(1).strip(), m.group(2))
            for m in FENCE.finditer(text)]


@pytest.fixture(scope="module")
def example_models(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("doc-models")
    subprocess.run([sys.executable, str(ROOT / "examples" / "make_models.py"), "--out", str(out)],
                   check=True, capture_output=True)
    write_loras(out)
    write_pipelines(out)
    return out


def write_pipelines(models: Path) -> None:
    """The tiny SD1 diffusers pipeline folders docs/diffusers.md merges (made with diffusers)."""
    from .diffusers_tiny import make

    for name, seed in (("pipe_a", 1), ("pipe_b", 2)):
        if not (models / name).exists():
            make("sd1", models / name, seed=seed)


def write_loras(models: Path) -> None:
    """The LoRAs docs/adapters.md bakes, merges and resizes, when examples/make_models.py has not
    written them: random kohya LoRAs of the example models, as that script makes them."""
    from mechalang.synth import make_lora

    for name, base, rank, seed in (("style", "ghostmix", 4, 11), ("detail", "ghostmix", 2, 12),
                                   ("xl_style", "xl_base", 4, 13)):
        if not (models / f"{name}.safetensors").exists():
            make_lora(models / f"{base}.safetensors", models / f"{name}.safetensors", rank=rank, seed=seed,
                      scale=0.05)


def workspace(tmp_path: Path, models: Path) -> Path:
    ws = tmp_path / "ws"
    shutil.copytree(ROOT / "examples", ws / "examples",
                    ignore=shutil.ignore_patterns("models", "out", "__pycache__"))
    (ws / "examples" / "models").symlink_to(models, target_is_directory=True)
    (ws / "models").symlink_to(models, target_is_directory=True)
    return ws


def run_sh(block: Block, ws: Path, env: dict[str, str]) -> None:
    runner = CliRunner()
    for raw in block.text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        expect_failure = line.endswith("# fails")
        line = line.removesuffix("# fails").strip()
        for command in (c.strip() for c in line.split("&&")):
            words = shlex.split(command, comments=True)
            if not words or words[0] == "pip" or words[:3] == ["python", "-m", "pytest"]:
                continue
            if words[0] == "mecha":
                result = runner.invoke(app, words[1:], env=env, catch_exceptions=False)
                code, output = result.exit_code, result.output
            elif words[0] == "python":
                r = subprocess.run([sys.executable, *words[1:]], cwd=ws, env={**os.environ, **env},
                                   capture_output=True, text=True, timeout=600)
                code, output = r.returncode, r.stdout + r.stderr
            else:
                raise AssertionError(f"{block.where()}: don't know how to run `{command}`")
            if expect_failure:
                assert code != 0, f"{block.where()}: `{command}` should fail\n{output}"
            else:
                assert code == 0, f"{block.where()}: `{command}` exited {code}\n{output}"


def check_recipe(block: Block, ws: Path) -> None:
    path = ws / (block.file or f"block_{block.line}.mecha")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(block.text, encoding="utf-8")
    program = pipeline.plan(pipeline.load(path))
    errors = [d for d in program.diagnostics if d.is_error]
    fails = re.search(r"fails=(\w+)", block.info)
    if fails:
        assert [d.code for d in errors][:1] == [fails.group(1)], (
            f"{block.where()}: expected {fails.group(1)}, got {[(d.code, d.message) for d in errors]}")
    else:
        assert not errors, f"{block.where()}: " + "; ".join(f"{d.code} {d.message}" for d in errors)


@pytest.mark.parametrize("doc", [d for d in DOCS if d.name != "diagnostics.md"], ids=lambda d: d.name)
def test_every_block_runs(doc, example_models, tmp_path, monkeypatch):
    ws = workspace(tmp_path, example_models)
    monkeypatch.chdir(ws)
    monkeypatch.delenv("MECHA_MODELS_DIR", raising=False)
    monkeypatch.setenv("MECHA_PATH", "")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    env = {"MECHA_PATH": "", "XDG_CACHE_HOME": str(tmp_path / "cache")}
    namespace: dict = {"__name__": f"doc_{doc.stem}"}
    ran = 0
    for block in blocks_of(doc):
        if block.file and block.lang != "mecha":
            (ws / block.file).parent.mkdir(parents=True, exist_ok=True)
            (ws / block.file).write_text(block.text, encoding="utf-8")
        if block.lang == "mecha":
            check_recipe(block, ws)
        elif block.lang == "python":
            code = compile(block.text, block.where(), "exec")
            exec(code, namespace)  # noqa: S102 - the documentation's own examples
        elif block.lang == "sh":
            run_sh(block, ws, env)
        else:
            continue
        ran += 1
    assert ran, f"{doc.name} has no block that runs"


def test_docs_link_only_inside_the_project():
    for doc in DOCS:
        text = doc.read_text(encoding="utf-8")
        assert "../shared" not in text and "DESIGN.md" not in text, doc.name
        for target in re.findall(r"\]\(([^)#\s]+)", text):
            if re.match(r"[a-z]+://", target):
                continue
            resolved = (doc.parent / target).resolve()
            assert resolved.is_relative_to(ROOT.resolve()), f"{doc.name} links outside: {target}"
            assert resolved.exists(), f"{doc.name} links to a missing file: {target}"


def test_the_documents_exist():
    names = {d.name for d in DOCS}
    assert {"README.md", "language.md", "cli.md", "python.md", "plugins.md", "diagnostics.md"} <= names
