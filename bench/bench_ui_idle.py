"""The memory `mecha ui` holds while idle: the server started, its pages served, a form checked.

Starts `python -m mechalang ui --no-browser` on a folder of two small SD1.5 files, opens the token
URL it prints (the cookie it sets carries the token after that), requests the page, its script and
style sheet and the JSON the page reads (models, methods, the sd1 blocks and presets), then checks
a two-model form (`POST /api/form`: the checker reads the headers). After each step it reads the
server's VmRSS from /proc/PID/status, and whether torch's library is mapped (/proc/PID/maps).

Baseline, in the same run: a bare Starlette app on uvicorn (the same stack, no mechalang) serving
one HTML page, measured the same way after one request.

    python bench/bench_ui_idle.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import http.cookiejar
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).parent.parent

BASELINE = """
import socket, sys, uvicorn
from starlette.applications import Starlette
from starlette.responses import HTMLResponse
from starlette.routing import Route

async def index(request):
    return HTMLResponse("<!doctype html><title>baseline</title><p>hello</p>")

sock = socket.socket()
sock.bind(("127.0.0.1", 0))
sock.listen(128)
print(f"http://127.0.0.1:{sock.getsockname()[1]}/", flush=True)
uvicorn.Server(uvicorn.Config(Starlette(routes=[Route("/", index)]), log_level="warning", lifespan="off")).run(
    sockets=[sock])
"""


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def torch_mapped(pid: int) -> bool:
    return "libtorch" in Path(f"/proc/{pid}/maps").read_text()


def first_line(p: subprocess.Popen, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = p.stdout.readline()
        if line.startswith("http") or "http://" in line:
            return line[line.index("http"):].strip()
    raise RuntimeError("the server printed no URL")


def mib(n: float) -> str:
    return f"{n / 2**20:.1f} MiB"


def one_round(models: Path) -> dict[str, float]:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out: dict[str, float] = {}
    p = subprocess.Popen([sys.executable, "-m", "mechalang", "ui", "--models-dir", str(models), "--no-browser"],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=ROOT)
    try:
        url = first_line(p)
        base = url.split("/?")[0]
        out["started"] = rss(p.pid)
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
        opener.open(url).read()  # the token URL: sets the cookie, redirects to the page
        for path in ("/static/app.js", "/static/style.css", "/api/models", "/api/methods", "/api/arch/sd1"):
            opener.open(base + path).read()
        out["pages"] = rss(p.pid)
        req = urllib.request.Request(base + "/api/form", method="POST", headers={"Content-Type": "application/json"},
                                     data=json.dumps({"models": ["a.safetensors", "b.safetensors", None],
                                                      "alpha": 0.3}).encode())
        answer = json.loads(opener.open(req).read())
        assert answer["ok"], answer
        out["checked"] = rss(p.pid)
        out["torch"] = float(torch_mapped(p.pid))
    finally:
        p.terminate()
        p.wait(30)
    b = subprocess.Popen([sys.executable, "-c", BASELINE], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        urllib.request.urlopen(first_line(b)).read()
        out["baseline"] = rss(b.pid)
    finally:
        b.terminate()
        b.wait(30)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    from mechalang.synth import make_model

    with tempfile.TemporaryDirectory() as tmp:
        models = Path(tmp)
        make_model("sd1", models / "a.safetensors", dim_cap=8, dtype="float16", seed=1)
        make_model("sd1", models / "b.safetensors", dim_cap=8, dtype="float16", seed=2)
        rounds = [one_round(models) for _ in range(args.rounds)]
    med = {k: statistics.median(r[k] for r in rounds) for k in rounds[0]}
    print(f"mecha ui idle RSS, median of {args.rounds} rounds (python {sys.version.split()[0]}):")
    print(f"  started, nothing served yet          {mib(med['started'])}")
    print(f"  page, script, style and JSON served  {mib(med['pages'])}")
    print(f"  after checking a two-model form      {mib(med['checked'])}")
    print(f"  baseline: bare Starlette + uvicorn   {mib(med['baseline'])}  "
          f"(mecha ui / baseline after the form check: {med['checked'] / med['baseline']:.2f}x)")
    print(f"  torch imported by the idle server: {'yes' if any(r['torch'] for r in rounds) else 'no'}")
    return 1 if any(r["torch"] for r in rounds) else 0


if __name__ == "__main__":
    sys.exit(main())
