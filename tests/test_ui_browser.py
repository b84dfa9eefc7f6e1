"""`mecha ui` end to end in a real browser: Playwright driving Debian's Chromium (never a downloaded
one) against the real server (uvicorn in a thread) on generated models. A screenshot of each page
is saved under the test's tmp folder, and copied to $MECHA_TEST_ARTIFACTS (or $MECHA_ARTIFACTS, the
TUI tests' folder) when set."""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
if not Path(CHROMIUM).is_file():
    pytest.skip(f"{CHROMIUM} is missing (CI installs Debian's chromium package)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (the `test` extra has it)")

from mechalang.synth import make_model  # noqa: E402

sync_api.expect.set_options(timeout=30_000)  # a first merge imports torch: seconds on a busy 2-core machine

A, B = "alpha_one.safetensors", "beta_two.safetensors"
WAIT = 30_000  # ms


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    import uvicorn

    from mechalang.ui import create_app

    root = tmp_path_factory.mktemp("ui_browser")
    models = root / "models"
    models.mkdir()
    make_model("sd1", models / A, dim_cap=8, dtype="float32", seed=1)
    make_model("sd1", models / B, dim_cap=8, dtype="float32", seed=2)
    outside = root / "outside"
    outside.mkdir()
    make_model("sd1", outside / "secret.safetensors", dim_cap=4, dtype="float32", seed=3)
    (models / "link.safetensors").symlink_to(outside / "secret.safetensors")
    port = _free_port()
    app = create_app(models, port=port)
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not srv.started:
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.02)
    base = f"http://127.0.0.1:{port}"
    yield {"base": base, "url": f"{base}/?token={app.state.ui.guard.token}", "models": models, "app": app}
    srv.should_exit = True
    thread.join(10)


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        yield b
        b.close()


@pytest.fixture
def page(browser, server):
    context = browser.new_context(viewport={"width": 1280, "height": 720})
    pg = context.new_page()
    errors: list[str] = []  # script errors and console errors (a Content-Security-Policy refusal, say)
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    pg.set_default_timeout(WAIT)
    pg.goto(server["url"])
    pg.wait_for_selector("body[data-ready='1']")
    yield pg
    context.close()
    assert not errors, errors


def _shot(page, tmp_path: Path, name: str) -> None:
    out = tmp_path / "screens"
    out.mkdir(exist_ok=True)
    path = out / f"ui-{name}.png"
    page.screenshot(path=str(path), full_page=True)
    for var in ("MECHA_TEST_ARTIFACTS", "MECHA_ARTIFACTS"):
        if os.environ.get(var):
            dest = Path(os.environ[var])
            dest.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, dest / path.name)
            break


def _settled(page) -> None:
    """Until the check of the latest form change is shown (the script marks the body)."""
    page.wait_for_function("() => document.body.dataset.formBusy === '0'")


def _outputs(models: Path) -> set[str]:
    return {p.name for p in models.iterdir()} - {A, B, "link.safetensors"}


def test_quick_merge_with_block_sliders_matches_torch(page, server, tmp_path):
    from safetensors.torch import load_file

    models = server["models"]
    _shot(page, tmp_path, "1-quick-merge-empty")
    page.select_option("#model-a", A)
    page.select_option("#model-b", B)
    page.fill("#alpha-number", "0.3")
    expect = sync_api.expect
    expect(page.locator("#alpha-dir")).to_contain_text("0.3 = 70 % A, 30 % B")
    page.click("#tab-blocks")
    page.wait_for_selector("#block-IN00")
    page.fill("#block-IN00", "0.1")
    page.fill("#block-M00", "0.9")
    # the third by keyboard alone: focus the slider, then arrow keys (0.01 a step)
    page.focus("#block-OUT11")
    page.keyboard.press("Home")       # 0
    for _ in range(60):
        page.keyboard.press("ArrowRight")
    expect(page.locator("#block-OUT11-value")).to_have_text("0.6")
    mbw = page.input_value("#mbw").split(",")
    assert len(mbw) == 26 and mbw[0] == "0.3" and mbw[1] == "0.1" and mbw[13] == "0.9" and mbw[-1] == "0.6"
    _settled(page)
    _shot(page, tmp_path, "2-block-weights")
    page.click("#tab-merge")
    expect(page.locator("#recipe")).to_contain_text("alpha={default: 0.3, IN00: 0.1, M00: 0.9, OUT11: 0.6}")
    assert " as fp16" not in page.text_content("#recipe")  # the dtype defaults to model A's
    expect(page.locator("#status")).to_contain_text("check passed: 1831 keys")
    expect(page.locator("#merge")).to_be_enabled()
    _shot(page, tmp_path, "3-quick-merge-checked")
    page.fill("#name", "blocky")
    _settled(page)
    expect(page.locator("#merge")).to_be_enabled()
    page.click("#merge")
    expect(page.locator("#percent")).to_have_text("100 %")
    expect(page.locator("#progress-text")).to_contain_text("1831/1831 keys")
    expect(page.locator("#summary")).to_contain_text("wrote blocky.safetensors")
    page.click("#provenance")
    expect(page.locator("#provenance-out")).to_contain_text("IN00: 0.1")
    _shot(page, tmp_path, "4-run-done")
    # registered: listed with the models after the run
    expect(page.locator("#models-table")).to_contain_text("blocky.safetensors")

    a, b = load_file(str(models / A)), load_file(str(models / B))
    out = load_file(str(models / "blocky.safetensors"))
    assert set(out) == set(a)
    for k, v in out.items():
        if not v.is_floating_point():
            continue
        # SD1's blocks by their key names, written out here independently of the architecture file
        # (supermerger's convention: time_embed is in IN00, the final `out.*` layers in OUT11)
        unet = k.removeprefix("model.diffusion_model.") if k.startswith("model.diffusion_model.") else ""
        if unet.startswith(("input_blocks.0.", "time_embed.")):
            w = 0.1
        elif unet.startswith("middle_block."):
            w = 0.9
        elif unet.startswith(("output_blocks.11.", "out.")):
            w = 0.6
        else:
            w = 0.3
        want = (1 - w) * a[k].double() + w * b[k].double()
        assert (v.double() - want).abs().max().item() < 1e-6, k
    (models / "blocky.safetensors").unlink()


def test_editor_shows_the_diagnostic_at_its_line(page, tmp_path):
    page.click("#tab-editor")
    text = f'let a = model("{A}")\nlet b = model("{B}")\nexport weighted_sum(a, bb) to "out.safetensors"\n'
    page.fill("#editor", text)
    expect = sync_api.expect
    diag = page.locator("#diagnostics li.error").first
    expect(diag).to_contain_text("line 3, column 24")
    expect(diag).to_contain_text("undefined name `bb`")
    expect(page.locator("#gutter .mark-error")).to_have_attribute("data-line", "3")
    _shot(page, tmp_path, "5-editor-error")
    diag.locator("button").click()  # puts the cursor on the error
    assert page.evaluate("() => document.getElementById('editor').selectionStart") == len(
        f'let a = model("{A}")\nlet b = model("{B}")\n') + 23
    page.fill("#editor", text.replace("bb", "b"))
    expect(page.locator("#editor-status")).to_contain_text("check passed: 1831 keys")
    expect(page.locator("#gutter .mark-error")).to_have_count(0)
    page.fill("#key-filter", "input_blocks.0.0.weight")
    page.wait_for_function("() => document.getElementById('keys').options.length === 1")
    page.select_option("#keys", index=0)
    page.click("#explain")
    expect(page.locator("#explain-out")).to_contain_text("block IN00")
    _shot(page, tmp_path, "6-editor-explain")


def test_cancel_leaves_no_output(page, server, tmp_path, monkeypatch):
    from mechalang.ui import jobs

    entered, release = threading.Event(), threading.Event()
    original = jobs.Job.progress

    def held(self, tensors, nbytes):  # the merge waits inside its first progress report
        original(self, tensors, nbytes)
        entered.set()
        release.wait(30)

    monkeypatch.setattr(jobs.Job, "progress", held)
    models = server["models"]
    before = _outputs(models)
    page.select_option("#model-a", A)
    page.select_option("#model-b", B)
    page.fill("#name", "to-cancel")
    _settled(page)
    page.click("#merge")
    assert entered.wait(30)
    expect = sync_api.expect
    expect(page.locator("#cancel")).to_be_enabled()
    # while it runs, a second browser tab gets its page, and a second merge is refused
    other = page.context.new_page()
    other.goto(server["base"] + "/")
    expect(other.locator("h1")).to_have_text("mecha ui")
    other.wait_for_function("() => document.body.dataset.runState === 'running'")  # it follows the merge
    r = other.request.post(server["base"] + "/api/run", data={"form": {"models": [A, B, None]}})
    assert r.status == 409 and "already running" in r.json()["refused"]
    other.close()
    page.click("#cancel")
    release.set()
    expect(page.locator("#progress-text")).to_contain_text("cancelled")
    expect(page.locator("#summary")).to_contain_text("no output was written")
    _shot(page, tmp_path, "7-run-cancelled")
    assert _outputs(models) == before


def test_refused_requests(browser, server, tmp_path):
    expect = sync_api.expect
    base = server["base"]
    context = browser.new_context(viewport={"width": 1280, "height": 720})
    pg = context.new_page()
    # no token: refused
    r = pg.goto(base + "/")
    assert r.status == 403
    expect(pg.locator("body")).to_contain_text("needs the token")
    _shot(pg, tmp_path, "8-refused-no-token")
    pg.goto(server["url"])
    pg.wait_for_selector("body[data-ready='1']")
    # the link out of the models folder is listed as not read, and cannot be chosen
    expect(pg.locator("#models-table")).to_contain_text("a link out of the models folder: not read")
    assert pg.locator("#model-a option[value='link.safetensors']").count() == 0
    req = context.request  # the page's cookie, outside the page's script
    assert req.get(base + "/api/provenance?name=..%2Foutside%2Fsecret.safetensors").status == 403
    assert req.get(base + "/api/provenance?name=link.safetensors").status == 403
    r = req.post(base + "/api/form", data={"models": ["link.safetensors", B]})
    assert r.status == 403
    r = req.post(base + "/api/form", data={"models": [A, B]}, headers={"Origin": "http://evil.example"})
    assert r.status == 403 and "Origin" in r.text()
    r = req.get(base + "/", headers={"Host": "rebound.example"})
    assert r.status == 403 and "Host" in r.text()
    context.close()


def test_phone_width_and_keyboard(browser, server, tmp_path):
    expect = sync_api.expect
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True)
    pg = context.new_page()
    pg.set_default_timeout(WAIT)
    pg.goto(server["url"])
    pg.wait_for_selector("body[data-ready='1']")
    # nothing wider than the screen
    assert pg.evaluate("() => document.documentElement.scrollWidth") <= 390 + 1
    # another method's hyperparameters, drawn from its declaration with their bounds
    pg.select_option("#method", "tensor_sum")
    beta = pg.locator("#hyper-beta")
    expect(beta).to_have_attribute("max", "1")
    expect(pg.locator("#hypers")).to_contain_text("beta: float in [0, 1], default")
    assert pg.evaluate("() => document.documentElement.scrollWidth") <= 390 + 1
    _shot(pg, tmp_path, "9-phone-quick-merge")
    # by keyboard alone: tabs by arrow keys, fields by Tab, a visible focus ring
    pg.focus("#tab-merge")
    pg.keyboard.press("ArrowRight")
    expect(pg.locator("#panel-blocks")).to_be_visible()
    assert pg.evaluate("() => document.activeElement.id") == "tab-blocks"
    outline = pg.evaluate("() => getComputedStyle(document.activeElement).outlineStyle")
    assert outline not in ("", "none")
    pg.keyboard.press("ArrowRight")
    expect(pg.locator("#panel-editor")).to_be_visible()
    _shot(pg, tmp_path, "10-phone-editor")
    pg.keyboard.press("ArrowRight")
    expect(pg.locator("#panel-run")).to_be_visible()
    context.close()
