"""Every example recipe runs end to end on the generated example models, and the recipes are in
canonical form."""

from __future__ import annotations

from pathlib import Path

import pytest
from safetensors.torch import load_file
from typer.testing import CliRunner

from mechalang import pipeline
from mechalang.cli import app
from mechalang.commands.fmt import fmt_command

ROOT = Path(__file__).parent.parent
EXAMPLES = ROOT / "examples"
RECIPES = sorted(p.name for p in EXAMPLES.glob("*.mecha"))
runner = CliRunner()


@pytest.fixture(scope="module")
def example_copy(example_workspace) -> Path:
    """The examples folder copied aside (outputs land next to the recipes), with its models."""
    return example_workspace


@pytest.mark.parametrize("name", RECIPES)
def test_example_runs(example_copy, name):
    args = ["run", str(example_copy / name)]
    if name == "plugin.mecha":
        # the repository's copy: loading one file twice is a no-op, a second file defining the
        # same method name would be refused
        args += ["--plugin", str(EXAMPLES / "plugins" / "my_methods.py")]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    compiled = pipeline.plan(pipeline.load(example_copy / name))
    outputs = [o.path for o in compiled.plan.outputs]
    assert outputs
    for path in outputs:
        out = load_file(path)
        assert len(out) == len(next(o for o in compiled.plan.outputs if o.path == path).tensors)
        assert all(t.numel() == 0 or t.isfinite().all() for t in out.values() if t.is_floating_point())


def test_sdmecha_example_runs(example_copy):
    res = runner.invoke(app, ["run", str(example_copy / "sdmecha" / "block_weighted_xl.mecha")])
    assert res.exit_code == 0, res.output


def test_examples_are_canonically_formatted(capsys):
    files = [str(p) for p in sorted(EXAMPLES.glob("*.mecha")) + sorted((EXAMPLES / "lib").glob("*.mecha"))]
    assert fmt_command(files, check=True, diff=False, format="text") == 0, capsys.readouterr().out
