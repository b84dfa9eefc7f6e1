"""`mecha ui`'s server with Starlette's TestClient: the guard (token, Host, Origin, folders), the form's
recipe, the live check, one merge at a time, pages served while a merge runs, cancel, SSE progress."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("starlette")
pytest.importorskip("httpx")

from mechalang.synth import make_lora, make_model  # noqa: E402

TOKEN = "test-token-123"
BASE = "http://127.0.0.1:8123"
A, B = "alpha_one.safetensors", "beta_two.safetensors"


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("ui")
    models = root / "models"
    models.mkdir()
    make_model("sd1", models / A, dim_cap=8, dtype="float32", seed=1)
    make_model("sd1", models / B, dim_cap=8, dtype="float32", seed=2)
    make_lora(models / A, models / "style_lora.safetensors", rank=2, dtype="float32", seed=3)
    make_lora(models / A, models / "other_lora.safetensors", rank=2, dtype="float32", seed=6)
    make_model("sdxl", models / "xl.safetensors", dim_cap=8, dtype="float32", seed=5)
    secret = root / "outside"
    secret.mkdir()
    make_model("sd1", secret / "secret.safetensors", dim_cap=4, dtype="float32", seed=4)
    (secret / "lib.mecha").write_text("let x = 1\n")
    (models / "link.safetensors").symlink_to(secret / "secret.safetensors")
    return models, secret


@pytest.fixture
def client(folders):
    from starlette.testclient import TestClient

    from mechalang.ui import create_app

    models, _ = folders
    app = create_app(models, token=TOKEN)
    c = TestClient(app, base_url=BASE)
    c.cookies.set(app.state.ui.cookie, TOKEN)
    yield c
    job = app.state.ui.runner.current
    if job is not None:  # leave no merge thread behind
        job.cancel.set()
        deadline = time.monotonic() + 30
        while not job.finished and time.monotonic() < deadline:
            time.sleep(0.02)
    for p in models.iterdir():
        if p.name not in {A, B, "style_lora.safetensors", "other_lora.safetensors", "link.safetensors",
                          "xl.safetensors"}:
            p.unlink()


def form(**kw):
    data = {"models": [A, B, None], "method": "weighted_sum", "alpha": 0.5}
    data.update(kw)
    return data


# -- the guard ------------------------------------------------------------------------------------

def test_token_url_becomes_a_cookie(folders):
    from starlette.testclient import TestClient

    from mechalang.ui import create_app

    app = create_app(folders[0], token=TOKEN)
    c = TestClient(app, base_url=BASE)
    assert c.get("/").status_code == 403                          # no token
    assert c.get("/api/models").status_code == 403
    assert c.post("/api/form", json=form()).status_code == 403
    assert c.get("/?token=wrong", follow_redirects=False).status_code == 403
    r = c.get(f"/?token={TOKEN}", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/"
    cookie = r.headers["set-cookie"]
    assert "HttpOnly" in cookie and "samesite=strict" in cookie.lower()
    assert c.get("/").status_code == 200                          # the cookie now carries it
    assert c.get("/api/models").status_code == 200
    page = c.get("/")
    assert TOKEN not in page.text                                  # never written into the page
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]


def test_wrong_host_and_origin_are_refused(client):
    assert client.get("/").status_code == 200
    # DNS rebinding: a foreign name resolved to 127.0.0.1 still sends its own name as Host
    r = client.get("/", headers={"Host": "evil.example:8123"})
    assert r.status_code == 403 and "Host" in r.text
    r = client.post("/api/form", json=form(), headers={"Origin": "http://evil.example"})
    assert r.status_code == 403 and "Origin" in r.text
    r = client.post("/api/run", json={"form": form()}, headers={"Origin": "http://evil.example:8123"})
    assert r.status_code == 403
    assert client.post("/api/form", json=form(), headers={"Origin": BASE}).status_code == 200
    assert client.post("/api/form", json=form(), headers={"Origin": "http://localhost:8123"}).status_code == 200


def test_path_traversal_and_links_out_are_refused(client, folders):
    models, secret = folders
    for name in ("../outside/secret.safetensors", "..", "/etc/passwd", "sub/x.safetensors"):
        r = client.get("/api/provenance", params={"name": name})
        assert r.status_code == 403, name
    r = client.get("/api/provenance", params={"name": "link.safetensors"})  # a link out of the folder
    assert r.status_code == 403 and "outside" in r.json()["refused"]
    r = client.post("/api/form", json=form(models=["../outside/secret.safetensors", B]))
    assert r.status_code == 403
    r = client.post("/api/form", json=form(models=["link.safetensors", B]))
    assert r.status_code == 403
    listed = {m["name"]: m for m in client.get("/api/models").json()["models"]}
    assert "not read" in listed["link.safetensors"]["problem"] and listed["link.safetensors"]["size"] == 0
    assert client.get("/static/../server.py").status_code in (403, 404)
    # recipes typed in the editor: imports, models and exports outside the folders
    (models / "nested.mecha").write_text(f'import "{secret}/lib.mecha" as l\n')
    for text in (f'import "{secret}/lib.mecha" as l\n', 'import "lib" as l\n',  # not beside it: MECHA_PATH?
                 'import "nested.mecha" as n\n',  # an import inside the folder that imports from outside
                 'let s = model("../outside/secret.safetensors")\nexport s to "x.safetensors"\n',
                 'let s = model("link.safetensors")\nexport s to "x.safetensors"\n',
                 f'let a = model("{A}")\nexport a to "../outside/stolen.safetensors"\n',
                 'param p: str = "../outside/secret.safetensors"\nlet a = model(p)\nexport a to "y.safetensors"\n'):
        r = client.post("/api/check", json={"text": text})
        assert r.status_code == 403 and "outside" in r.json()["refused"], text
        assert client.post("/api/run", json={"text": text}).status_code == 403
    assert not (secret / "stolen.safetensors").exists()
    # a module beside the recipe, in the folder, is fine
    (models / "blend.mecha").write_text("def blend(x, y) = weighted_sum(x, y, alpha=0.25)\n")
    text = f'import "blend" as b\nlet a = model("{A}")\nexport b.blend(a, model("{B}")) to "z.safetensors"\n'
    r = client.post("/api/check", json={"text": text}).json()
    assert r["ok"], r


# -- the form and the check -----------------------------------------------------------------------

def test_form_recipe_is_the_form_models(client, folders):
    from mechalang.commands.quick_form import FormState, recipe_text

    models, _ = folders
    r = client.post("/api/form", json=form(alpha=0.3, blocks={"IN00": 0.1, "M00": 0.9, "OUT11": 0.6},
                                           classes_off=["attn2"])).json()
    assert r["ok"], r
    want = recipe_text(FormState(models, models=[A, B, None], alpha=0.3, arch="sd1",
                                 blocks={"IN00": 0.1, "M00": 0.9, "OUT11": 0.6}, classes_off=("attn2",),
                                 out_folder=models))
    assert r["recipe"] == want
    assert "alpha={default: 0.3, IN00: 0.1, M00: 0.9, OUT11: 0.6, attn2: 0.0}" in r["recipe"]
    assert r["total_keys"] == 1831
    # the quick merge: the same recipe `mecha merge --print-recipe` prints
    r = client.post("/api/form", json=form(alpha=0.25)).json()
    printed = subprocess.run([sys.executable, "-m", "mechalang", "merge", A, B, "--alpha", "0.25", "--models-dir",
                              str(models), "--print-recipe"], capture_output=True, text=True, cwd=models, timeout=60)
    assert r["recipe"] == printed.stdout and r["command"].startswith("mecha merge alpha_one.safetensors")
    # a preset with a class off: `PRESET with {class: 0.0}`
    r = client.post("/api/form", json=form(preset="GRAD_V", classes_off=["norm"])).json()
    assert r["ok"] and 'from "std/presets" import GRAD_V' in r["recipe"] and "GRAD_V with {norm: 0.0}" in r["recipe"]


def test_force_and_dtype(client):
    r = client.post("/api/form", json=form(models=[A, "xl.safetensors", None])).json()
    assert not r["ok"] and "sdxl" in "\n".join(r["lines"])
    r = client.post("/api/form", json=form(models=[A, "xl.safetensors", None], force=True, dtype="fp16")).json()
    assert r["ok"], r["lines"]
    assert "--force" in r["command"] and "--dtype fp16" in r["command"] and " as fp16" in r["recipe"]
    assert client.post("/api/form", json=form(dtype="fp8")).status_code == 400


def test_form_problems_and_name_rule(client):
    r = client.post("/api/form", json=form(name="bad name/x")).json()
    assert not r["ok"] and not r["name_ok"] and any("bad name" in line for line in r["lines"])
    r = client.post("/api/form", json=form(method="add_difference")).json()
    assert not r["ok"] and any("choose model C" in line for line in r["lines"])
    r = client.post("/api/form", json=form(method="slerp", hypers={"epsilon": "abc"}))
    assert r.status_code == 400 and "not a number" in r.json()["refused"]
    r = client.post("/api/form", json=form(method="tensor_sum", hypers={"beta": 2.0})).json()
    assert not r["ok"] and "beta" in "\n".join(r["lines"])     # the declared bound, from the checker
    r = client.post("/api/form", json=form(blocks={"IN99": 0.5}))
    assert r.status_code == 400 and "IN99" in r.json()["refused"]


def test_lora_baking_is_a_kind_of_model(client):
    models = {m["name"]: m for m in client.get("/api/models").json()["models"]}
    assert models["style_lora.safetensors"]["kind"] == "adapter" and models[A]["kind"] == "model"
    r = client.post("/api/form", json=form(models=[A, "style_lora.safetensors", None], strength=0.8)).json()
    assert r["ok"], r["lines"]
    assert r["baking"] and 'lora("style_lora.safetensors", base=alpha_one)' in r["recipe"]
    assert "0.8 * style_lora" in r["recipe"] and "--lora 0.8" in r["command"]
    r = client.post("/api/form", json=form(models=["style_lora.safetensors", A, None])).json()
    assert not r["ok"] and any("put the model first" in line for line in r["lines"])
    # two LoRAs: merged into one LoRA, as `mecha merge LORA1 LORA2 --alpha` does
    r = client.post("/api/form", json=form(models=["style_lora.safetensors", "other_lora.safetensors", None],
                                           alpha=0.3)).json()
    assert r["ok"], r["lines"]
    assert "0.7 * style_lora + 0.3 * other_lora" in r["recipe"] and " as lora(" in r["recipe"]


def test_blocks_of_each_architecture(client):
    sd1, sdxl = client.get("/api/arch/sd1").json(), client.get("/api/arch/sdxl").json()
    assert len(sd1["blocks"]) == 26 and sd1["blocks"][0] == "BASE" and len(sdxl["blocks"]) == 20
    assert len(sd1["presets"]["GRAD_V"]) == 26 and len(sdxl["presets"]["GRAD_V"]) == 20
    assert "attn2" in sd1["classes"]
    for arch in ("flux", "sd3"):
        info = client.get(f"/api/arch/{arch}").json()
        assert len(info["blocks"]) > 10 and info["presets"] == {}, arch
    assert client.get("/api/arch/nonsense").json()["blocks"] == []


def test_live_check_reports_the_line(client):
    text = f'let a = model("{A}")\nlet b = model("{B}")\nexport weighted_sum(a, bb) to "out.safetensors"\n'
    r = client.post("/api/check", json={"text": text}).json()
    assert not r["ok"]
    d = r["diagnostics"][0]
    assert d["line"] == 3 and d["col"] == 24 and "bb" in d["message"] and d["severity"] == "error"
    # the same diagnostic `mecha check` prints
    ok = text.replace("bb", "b")
    r = client.post("/api/check", json={"text": ok}).json()
    assert r["ok"] and r["total_keys"] == 1831
    keys = client.post("/api/keys", json={"text": ok}).json()["keys"]
    key = next(k for k in keys if "input_blocks.0.0.weight" in k)
    ex = client.post("/api/explain", json={"text": ok, "key": key}).json()
    assert ex["ok"] and "weighted_sum(a, b" in ex["text"] and "block IN00" in ex["text"]


# -- runs -------------------------------------------------------------------------------------------

def _events(client, job_id: int) -> list[dict]:
    out = []
    with client.stream("GET", f"/api/run/{job_id}/events") as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if line.startswith("data: "):
                out.append(json.loads(line[6:]))
                if out[-1]["state"] in ("done", "cancelled", "failed"):
                    break
    return out


def test_run_streams_progress_to_100_and_the_output_is_right(client, folders):
    from safetensors.torch import load_file

    models, _ = folders
    r = client.post("/api/run", json={"form": form(alpha=0.3, name="ws03")})
    assert r.status_code == 202, r.text
    events = _events(client, r.json()["job"]["id"])
    last = events[-1]
    assert last["state"] == "done" and last["percent"] == 100.0 and last["keys"] == last["total_keys"] == 1831
    assert last["outputs"] == ["ws03.safetensors"]
    a, b = load_file(str(models / A)), load_file(str(models / B))
    out = load_file(str(models / "ws03.safetensors"))
    for k, v in out.items():
        if v.is_floating_point():
            assert (v.double() - (0.7 * a[k].double() + 0.3 * b[k].double())).abs().max() < 1e-6, k
    prov = client.get("/api/provenance", params={"name": "ws03.safetensors"}).json()
    assert "weighted_sum(alpha_one, beta_two, alpha=0.3)" in prov["recipe"]
    assert [i["file"] for i in prov["inputs"]] == [A, B]
    # registered: listed with the models
    assert "ws03.safetensors" in {m["name"] for m in client.get("/api/models").json()["models"]}
    # again without overwrite: refused before anything runs
    r = client.post("/api/run", json={"form": form(alpha=0.3, name="ws03")})
    assert r.status_code == 400 and "exists" in "\n".join(r.json()["lines"])


@pytest.fixture
def gate(monkeypatch):
    """Holds a merge inside its first progress report until released: the merge is then running,
    deterministically, in its own thread."""
    from mechalang.ui import jobs

    entered, release = threading.Event(), threading.Event()
    original = jobs.Job.progress

    def held(self, tensors, nbytes):
        original(self, tensors, nbytes)
        entered.set()
        release.wait(30)

    monkeypatch.setattr(jobs.Job, "progress", held)
    yield entered, release
    release.set()


def test_one_merge_at_a_time_and_pages_served_while_it_runs(client, folders, gate):
    entered, release = gate
    models, _ = folders
    r = client.post("/api/run", json={"form": form(name="first")})
    assert r.status_code == 202
    job_id = r.json()["job"]["id"]
    assert entered.wait(60), "the merge did not start"
    # the merge is running in its thread: the server still answers, quickly
    t0 = time.perf_counter()
    assert client.get("/").status_code == 200
    assert client.post("/api/form", json=form(alpha=0.2)).json()["ok"]
    assert time.perf_counter() - t0 < 10
    assert client.get(f"/api/run/{job_id}").json()["state"] == "running"
    r = client.post("/api/run", json={"form": form(name="second")})
    assert r.status_code == 409 and "already running" in r.json()["refused"]
    release.set()
    assert _events(client, job_id)[-1]["state"] == "done"
    assert (models / "first.safetensors").is_file() and not (models / "second.safetensors").exists()


def test_cancel_leaves_no_output(client, folders, gate):
    entered, release = gate
    models, _ = folders
    before = sorted(os.listdir(models))
    r = client.post("/api/run", json={"form": form(name="cancelled")})
    job_id = r.json()["job"]["id"]
    assert entered.wait(60)
    assert client.post(f"/api/run/{job_id}/cancel").json()["job"]["cancelling"]
    release.set()
    last = _events(client, job_id)[-1]
    assert last["state"] == "cancelled" and "no output was written" in last["lines"][0]
    assert sorted(os.listdir(models)) == before
    # and the next merge may start
    r = client.post("/api/run", json={"form": form(name="after")})
    assert r.status_code == 202
    assert _events(client, r.json()["job"]["id"])[-1]["state"] == "done"


def test_editor_recipe_runs_into_the_output_folder(folders, tmp_path):
    from starlette.testclient import TestClient

    from mechalang.ui import create_app

    models, _ = folders
    out = tmp_path / "out"
    out.mkdir()
    app = create_app(models, out, token=TOKEN)
    c = TestClient(app, base_url=BASE)
    c.cookies.set(app.state.ui.cookie, TOKEN)
    text = f'let a = model("{A}")\nlet b = model("{B}")\nexport weighted_sum(a, b, alpha=0.5) to "ed.safetensors"\n'
    r = c.post("/api/run", json={"text": text})
    assert r.status_code == 202, r.text
    assert _events(c, r.json()["job"]["id"])[-1]["state"] == "done"
    assert (out / "ed.safetensors").is_file() and not (models / "ed.safetensors").exists()
    r = c.post("/api/save", json=form(name="saved"))
    assert r.json()["ok"] and (out / "saved.mecha").is_file()
    assert c.post("/api/save", json=form(name="saved")).status_code == 409  # never over a file


def test_cli_help_lists_ui():
    r = subprocess.run([sys.executable, "-m", "mechalang", "ui", "--help"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "--models-dir" in r.stdout and "--no-browser" in r.stdout
    assert Path(__file__).parent.parent.joinpath("mechalang", "ui", "static", "app.js").is_file()


def test_mecha_ui_command_serves_the_page(folders):
    """`mecha ui --no-browser`: the real server on a free port of 127.0.0.1, the token URL printed."""
    import httpx

    models, _ = folders
    p = subprocess.Popen([sys.executable, "-m", "mechalang", "ui", "--models-dir", str(models), "--no-browser"],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        line = p.stdout.readline()
        assert line.startswith("mecha ui: http://127.0.0.1:"), line
        url = line.split(": ", 1)[1].strip()
        base = url.split("/?")[0]
        with httpx.Client() as c:
            assert c.get(base + "/").status_code == 403
            r = c.get(url, follow_redirects=True)
            assert r.status_code == 200 and "<title>mecha ui</title>" in r.text
            assert c.get(base + "/api/models").json()["folder"] == str(models.resolve())
    finally:
        p.terminate()
        p.wait(30)
