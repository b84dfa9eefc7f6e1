"""`mecha tui`: the merge form driven with Textual's pilot, on small generated models."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("textual")

from mechalang.synth import make_model  # noqa: E402

SIZE = (140, 60)


@pytest.fixture
def models(tmp_path):
    folder = tmp_path / "models"
    folder.mkdir()
    make_model("sd1", folder / "alpha_one.safetensors", dim_cap=8, dtype="float32", seed=1)
    make_model("sd1", folder / "beta_two.safetensors", dim_cap=8, dtype="float32", seed=2)
    make_model("sdxl", folder / "xl.safetensors", dim_cap=8, dtype="float32", seed=3)
    return folder


def _snap(app, tmp_path: Path, name: str) -> None:
    """An SVG of the screen under the test's tmp folder, copied to $MECHA_ARTIFACTS when set."""
    out = tmp_path / "screens"
    out.mkdir(exist_ok=True)
    path = out / f"{name}.svg"
    path.write_text(app.export_screenshot(title=name), encoding="utf-8")
    if os.environ.get("MECHA_ARTIFACTS"):
        dest = Path(os.environ["MECHA_ARTIFACTS"])
        dest.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, dest / path.name)


async def _scanned(pilot, app, timeout: float = 30) -> None:
    """Wait for the models folder to be read (a worker does it after the first frame)."""
    deadline = time.monotonic() + timeout
    while not app.scanned.is_set() and time.monotonic() < deadline:
        await pilot.pause(0.02)
    await pilot.pause()


async def _settle(pilot, app, timeout: float = 30) -> None:
    """Until the check of the latest change is shown."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    await pilot.pause()
    await pilot.pause(0.05)  # the change's messages are handled
    while app.checked_gen != app.gen:
        assert loop.time() < end, "the check did not finish"
        await pilot.pause(0.02)
    await pilot.pause()


async def _wait_run(pilot, app, timeout: float = 60) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    await pilot.pause()
    while app.running or app.last_result is None:
        assert loop.time() < end, "the merge did not finish"
        await pilot.pause(0.05)
    await _settle(pilot, app)


def _choose(app, a: str | None, b: str | None, c: str | None = None) -> None:
    from textual.widgets import Select

    for slot, name in zip("abc", (a, b, c)):
        sel = app.query_one(f"#model-{slot}", Select)
        if name is None:
            sel.clear()
        else:
            sel.value = name


def _status(app) -> str:
    return str(app.query_one("#status").render())


def _ok_disabled(app) -> bool:
    return app.query_one("#ok").disabled


def test_weighted_sum_runs_and_matches(models, tmp_path):
    from mechalang.tui.app import MergeApp

    async def go():
        app = MergeApp(models_dir=models)
        async with app.run_test(size=SIZE) as pilot:
            await _scanned(pilot, app)
            await _settle(pilot, app)
            assert _ok_disabled(app)  # no models chosen yet
            _snap(app, tmp_path, "1-empty-form")
            _choose(app, "alpha_one.safetensors", "beta_two.safetensors")
            await _settle(pilot, app)
            app.set_alpha(0.3)
            await _settle(pilot, app)
            assert app.state.alpha == 0.3
            assert "0.3 = 70 % A, 30 % B" in str(app.query_one("#alpha-dir").render())
            assert app.last_check.ok, app.last_check.lines
            assert not _ok_disabled(app)
            cmd = str(app.query_one("#cmdline").render())
            assert "mecha merge alpha_one.safetensors beta_two.safetensors --alpha 0.3" in cmd
            _snap(app, tmp_path, "2-form-checked")
            app.action_page("blocks")
            await pilot.pause()
            _snap(app, tmp_path, "3-block-weights")
            app.action_page("recipe")
            await pilot.pause()
            _snap(app, tmp_path, "4-recipe")
            app.action_page("merge")
            await pilot.pause()
            await pilot.press("ctrl+s")
            await pilot.pause()
            assert app.state.recipe_path.is_file()
            await pilot.click("#ok")
            await _wait_run(pilot, app)
            assert app.last_result.ok, app.last_result.diagnostics
            _snap(app, tmp_path, "5-merged")
            out = app.state.output
            # registered: the output is listed after the refresh
            assert any(e.name == out.name for e in app.entries)
            assert "1831/1831 keys" in str(app.query_one("#progress-info").render())
            # a second run would overwrite it: OK only with overwrite ticked
            assert _ok_disabled(app) and "exists" in _status(app)
            app.query_one("#overwrite").value = True
            await _settle(pilot, app)
            assert not _ok_disabled(app)
            return out, app.state.recipe_path

    out, recipe = asyncio.run(go())
    from safetensors.torch import load_file

    a = load_file(str(models / "alpha_one.safetensors"))
    b = load_file(str(models / "beta_two.safetensors"))
    merged = load_file(str(out))
    assert set(merged) == set(a)
    for k, v in merged.items():
        if v.is_floating_point():
            want = 0.7 * a[k].double() + 0.3 * b[k].double()
            assert (v.double() - want).abs().max().item() < 1e-5, k
    # the saved recipe runs the same merge from the command line
    text = recipe.read_text()
    assert 'model("alpha_one.safetensors")' in text and "alpha=0.3" in text


def test_recipe_is_the_quick_merge_recipe(models):
    """With no block weights, the form's recipe is the one `mecha merge --print-recipe` prints."""
    from mechalang.commands.merge import merge_recipe
    from mechalang.commands.quick_form import FormState, recipe_text

    s = FormState(models.resolve(), ["alpha_one.safetensors", "beta_two.safetensors", None], alpha=0.3)
    assert recipe_text(s) == merge_recipe(s.chosen, method="weighted_sum", alpha=0.3, output=str(s.output),
                                          dtype=None, adapters=[False, False])


def test_bad_name_disables_ok(models, tmp_path):
    from textual.widgets import Input

    from mechalang.tui.app import MergeApp

    async def go():
        app = MergeApp(models_dir=models)
        async with app.run_test(size=SIZE) as pilot:
            await _scanned(pilot, app)
            _choose(app, "alpha_one.safetensors", "beta_two.safetensors")
            await _settle(pilot, app)
            assert not _ok_disabled(app)
            name = app.query_one("#name", Input)
            name.focus()
            await pilot.press("a", "/", "b")
            await _settle(pilot, app)
            assert name.value == "a/b"
            assert _ok_disabled(app)
            assert "letters, digits and . + -" in _status(app)
            assert app.query_one("#name-rule").has_class("bad")
            _snap(app, tmp_path, "6-bad-name")
            await pilot.press("backspace", "backspace")
            await pilot.press("-", "b")
            await _settle(pilot, app)
            assert name.value == "a-b" and not _ok_disabled(app)
            assert app.state.out_name == "a-b.safetensors"

    asyncio.run(go())


def test_incompatible_pair_then_force(models, tmp_path):
    from textual.widgets import Checkbox

    from mechalang.tui.app import MergeApp

    async def go():
        app = MergeApp(models_dir=models)
        async with app.run_test(size=SIZE) as pilot:
            await _scanned(pilot, app)
            _choose(app, "alpha_one.safetensors", "xl.safetensors")
            await _settle(pilot, app)
            assert not app.last_check.ok
            assert _ok_disabled(app)
            status = _status(app)
            assert "different architectures" in status and "sd1" in status and "sdxl" in status
            _snap(app, tmp_path, "7-incompatible")
            app.query_one("#force", Checkbox).value = True
            await _settle(pilot, app)
            assert app.last_check.ok, app.last_check.lines
            assert not _ok_disabled(app)
            assert "--force" in str(app.query_one("#cmdline").render())
            _snap(app, tmp_path, "8-forced")

    asyncio.run(go())


def test_block_weights_preset_and_mbw(models):
    from textual.widgets import Input, Select

    from mechalang.tui.app import MergeApp

    async def go():
        app = MergeApp(models_dir=models)
        async with app.run_test(size=SIZE) as pilot:
            await _scanned(pilot, app)
            _choose(app, "alpha_one.safetensors", "beta_two.safetensors")
            await _settle(pilot, app)
            app.action_page("blocks")
            await _settle(pilot, app)
            app.query_one("#block-IN00", Input).value = "0.1"
            app.query_one("#block-OUT11", Input).value = "0.9"
            await _settle(pilot, app)
            assert "alpha={default: 0.5, IN00: 0.1, OUT11: 0.9}" in app.last_check.text
            assert app.last_check.ok
            app.query_one("#block-OUT11", Input).value = "x"
            await _settle(pilot, app)
            assert _ok_disabled(app) and "not a number" in _status(app)
            app.query_one("#block-OUT11", Input).value = ""
            app.query_one("#preset", Select).value = "GRAD_V"
            await _settle(pilot, app)
            assert 'from "std/presets" import GRAD_V' in app.last_check.text and app.last_check.ok
            app.query_one("#mbw", Input).value = ",".join(["0.5"] * 26)
            await _settle(pilot, app)
            text = " ".join(app.last_check.text.split())
            assert "alpha=mbw( sd1, " in text and "GRAD_V" not in text and app.last_check.ok
            app.query_one("#mbw", Input).value = "0.5,0.5"
            await _settle(pilot, app)
            assert not app.last_check.ok and _ok_disabled(app)

    asyncio.run(go())


def test_other_method_hyperparameters(models):
    from textual.widgets import Input, Select

    from mechalang.tui.app import MergeApp

    async def go():
        app = MergeApp(models_dir=models)
        async with app.run_test(size=SIZE) as pilot:
            await _scanned(pilot, app)
            _choose(app, "alpha_one.safetensors", "beta_two.safetensors")
            await _settle(pilot, app)
            app.query_one("#method", Select).value = "slerp"
            await _settle(pilot, app)
            assert "alpha: float in [0, 1], default 0.5" in str(app.query_one("#alpha-bounds").render())
            eps = app.query_one("#hyper-dot_threshold", Input)
            eps.value = "2"
            await _settle(pilot, app)
            assert not app.last_check.ok and _ok_disabled(app)  # outside [0, 1]: the checker says so
            eps.value = "0.5"
            await _settle(pilot, app)
            assert app.last_check.ok and "dot_threshold=0.5" in app.last_check.text
            app.query_one("#method", Select).value = "add_difference"
            await _settle(pilot, app)
            assert not app.last_check.ok and "choose model C" in _status(app)
            _choose(app, "alpha_one.safetensors", "beta_two.safetensors", "alpha_one.safetensors")
            await _settle(pilot, app)
            assert app.last_check.ok, app.last_check.lines

    asyncio.run(go())


def test_cancelled_run_leaves_no_output(models, tmp_path):
    from mechalang.tui.app import MergeApp

    async def go():
        app = MergeApp(models_dir=models)
        async with app.run_test(size=SIZE) as pilot:
            await _scanned(pilot, app)
            _choose(app, "alpha_one.safetensors", "beta_two.safetensors")
            await _settle(pilot, app)
            assert app.last_check.ok
            app.action_merge()
            await pilot.press("ctrl+c")  # cancels the run (does not quit while one runs)
            await _wait_run(pilot, app)
            assert app.last_result.interrupted
            assert "cancelled" in str(app.query_one("#summary").render())
            _snap(app, tmp_path, "9-cancelled")
            assert app.is_running
            return app.state.output

    out = asyncio.run(go())
    assert not out.exists()
    assert not [p for p in models.iterdir() if p.name not in
                {"alpha_one.safetensors", "beta_two.safetensors", "xl.safetensors"}]


TORCH_PROBE = """
import asyncio, sys
from mechalang.tui.app import MergeApp
from textual.widgets import Select

async def go():
    app = MergeApp(models_dir=sys.argv[1])
    async with app.run_test() as pilot:
        while not app.scanned.is_set():
            await pilot.pause(0.02)
        await pilot.pause()
        app.query_one("#model-a", Select).value = "alpha_one.safetensors"
        app.query_one("#model-b", Select).value = "beta_two.safetensors"
        await pilot.pause()
        while app.checked_gen != app.gen:
            await pilot.pause(0.02)
        assert app.last_check.ok, app.last_check.lines
asyncio.run(go())
print("TORCH" if "torch" in sys.modules else "NO-TORCH")
"""


def test_form_and_check_do_not_import_torch(models):
    r = subprocess.run([sys.executable, "-c", TORCH_PROBE, str(models)], capture_output=True, text=True,
                       timeout=120)
    assert r.stdout.strip().splitlines()[-1:] == ["NO-TORCH"], r.stdout + r.stderr
