"""How long `mecha repl` takes to show its first prompt in a terminal.

Each round spawns the real program on a pseudo-terminal (pexpect), times spawn → first `mecha>`
prompt (prompt_toolkit's, with history, completer and highlighting set up), then leaves with
Ctrl-D; in alternation with `python -c pass` (the interpreter alone), each as a fresh process.
Reports the medians and whether torch was imported (it must not be until a merge runs).

    python bench/bench_startup.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).parent.parent
PROBE = ("import sys, runpy; sys.argv = ['mecha', 'repl']\n"
         "try:\n    runpy.run_module('mechalang', run_name='__main__')\n"
         "except SystemExit:\n    pass\n"
         "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH')\n")


def env(history: str) -> dict[str, str]:
    return dict(os.environ, MECHA_HISTORY=history, TERM="xterm", PROMPT_TOOLKIT_NO_CPR="1",
                PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))


def time_repl(history: str) -> float:
    import pexpect

    t0 = time.perf_counter()
    child = pexpect.spawn(sys.executable, ["-m", "mechalang", "repl"], env=env(history), timeout=30,
                          encoding="utf-8", dimensions=(40, 120))
    child.expect("mecha>")
    elapsed = time.perf_counter() - t0
    child.sendeof()
    child.expect(pexpect.EOF)
    child.close()
    return elapsed


def time_python() -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", "pass"], check=True)
    return time.perf_counter() - t0


def torch_imported(history: str) -> bool:
    import pexpect

    child = pexpect.spawn(sys.executable, ["-c", PROBE], env=env(history), timeout=30, encoding="utf-8",
                          dimensions=(40, 120))
    child.expect("mecha>")
    child.sendeof()
    i = child.expect(["NO-TORCH", "TORCH"])
    child.expect(pexpect.EOF)
    return i == 1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        history = os.path.join(tmp, "history")
        time_repl(history)  # warm the file cache and the bytecode
        repl, python = [], []
        for _ in range(args.rounds):
            repl.append(time_repl(history))
            python.append(time_python())
        torch = torch_imported(history)
    r, p = statistics.median(repl), statistics.median(python)
    print(f"mecha repl, spawn to first prompt: median {r * 1000:.0f} ms over {args.rounds} "
          f"(min {min(repl) * 1000:.0f}, max {max(repl) * 1000:.0f})")
    print(f"python -c pass:                    median {p * 1000:.0f} ms")
    print(f"mecha repl - python:               {(r - p) * 1000:.0f} ms; {os.cpu_count()} cores")
    print(f"torch imported at startup:         {'YES (bug)' if torch else 'no'}")
    print(f"target < 1 s:                      {'met' if r < 1 else 'MISSED'}")


if __name__ == "__main__":
    main()
