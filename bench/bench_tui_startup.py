"""How long `mecha tui` takes to start: spawn → the form mounted (models listed, first check shown).

Each round spawns `python -m mechalang tui --models-dir DIR` (and `mecha merge` without models,
which opens the same form) in a pseudo-terminal with MECHA_TUI_EXIT_AFTER_MOUNT=1, which makes the
app exit right after its first mount; the time is spawn → process exit (interpreter start,
imports, the models folder listed, the form composed and drawn once, teardown). What the catalog
learnt of each model is cached (commands/catalog.py), so later starts read no header: the first
start in a folder is reported separately. The models folder
holds two small SD1.5 files and one SDXL file. Pinned to 2 cores with `taskset` when it exists
(target: under 1 s). Also reports whether torch was imported (it must not be, before a merge).

    python bench/bench_tui_startup.py [--rounds 7]
"""

from __future__ import annotations

import argparse
import os
import pty
import select
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).parent.parent


def spawn(args: list[str], env: dict[str, str]) -> tuple[float, float, int]:
    """Run `args` on a pseudo-terminal (stdin, stdout, stderr): (spawn → exit in seconds, the CPU
    seconds it used (user + system), exit code). The CPU time barely moves when other processes
    share the cores, so it is the figure to compare on a busy machine; the wall time is what a user
    feels on an idle one."""
    master, slave = pty.openpty()
    t0 = time.perf_counter()
    p = subprocess.Popen(args, stdin=slave, stdout=slave, stderr=slave, env=env, cwd=ROOT, close_fds=True)
    os.close(slave)
    pid = 0
    while not pid:  # drain the terminal, or the app blocks on a full pty buffer
        r, _, _ = select.select([master], [], [], 0.05)
        if r:
            try:
                os.read(master, 65536)
            except OSError:  # the terminal closed: the process is exiting; wait for it below
                pid, status, usage = os.wait4(p.pid, 0)
                break
        pid, status, usage = os.wait4(p.pid, os.WNOHANG)
    elapsed = time.perf_counter() - t0
    p.returncode = os.waitstatus_to_exitcode(status)
    os.close(master)
    return elapsed, usage.ru_utime + usage.ru_stime, p.returncode


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    from mechalang.synth import make_model

    folder = Path(tempfile.mkdtemp(prefix="mecha-tui-bench-"))
    try:
        make_model("sd1", folder / "a.safetensors", dim_cap=8, dtype="float16", seed=1)
        make_model("sd1", folder / "b.safetensors", dim_cap=8, dtype="float16", seed=2)
        make_model("sdxl", folder / "xl.safetensors", dim_cap=8, dtype="float16", seed=3)
        cache = folder / "cache"
        env = dict(os.environ, MECHA_CACHE_DIR=str(cache), MECHA_TUI_EXIT_AFTER_MOUNT="1", TERM=os.environ.get("TERM", "xterm-256color"),
                   COLUMNS="120", LINES="40")
        pin = ["taskset", "-c", "0,1"] if shutil.which("taskset") and (os.cpu_count() or 1) >= 2 else []
        commands = {
            "mecha tui": [*pin, sys.executable, "-m", "mechalang", "tui", "--models-dir", str(folder)],
            "mecha merge (no models)": [*pin, sys.executable, "-m", "mechalang", "merge", "--models-dir", str(folder)],
        }
        # The first start in a folder reads every model's header (then cached by path, size and
        # mtime); it also warms the OS file cache and the .pyc files.
        t, c, _ = spawn(commands["mecha tui"], env)
        print(f"{'first start (no catalog cache)':26s} {t:.3f} s  CPU {c:.3f} s")
        for name, cmd in commands.items():
            times, cpu = [], []
            for _ in range(args.rounds):
                t, c, code = spawn(cmd, env)
                assert code == 0, f"{name}: exit code {code}"
                times.append(t)
                cpu.append(c)
            print(f"{name:26s} median {statistics.median(times):.3f} s  min {min(times):.3f} s  "
                  f"CPU median {statistics.median(cpu):.3f} s  ({args.rounds} rounds{', 2 cores' if pin else ''})")
        probe = ("import sys, time; t0 = time.perf_counter(); from mechalang.tui.app import MergeApp; "
                 f"app = MergeApp(models_dir={str(folder)!r}); "
                 "print(f'import + app creation {time.perf_counter() - t0:.3f} s; torch imported: '"
                 " + str('torch' in sys.modules))")
        r = subprocess.run([*pin, sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT)
        print(r.stdout.strip() or r.stderr.strip())
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
