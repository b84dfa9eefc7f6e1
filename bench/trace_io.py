"""Trace one cold `mecha run`: disk reads, writes and CPU use of the process, every half second.

    python bench/trace_io.py bench/models/bench_ws2_sd1.mecha     # a recipe bench_merge.py wrote
    python bench/trace_io.py RECIPE --warm --interval 0.25

The recipe's inputs (its `model("...")` paths) are evicted from the page cache first, as in
bench_merge.py --cache cold. Each line: seconds since the spawn, MiB/s read from and written to
the disk by the process (/proc/PID/io read_bytes, write_bytes) and the cores it used
(/proc/PID/stat utime + stime). The run's own timing line (MECHA_BENCH_TIMING=1: time to the first
key, the workers' waits for reads and for the writer) is printed at the end. This shows where a
run waits: on the disk (reads below the floor's rate, cores idle) or on the CPU.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from bench_floor import drop_cache, warm_cache  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("recipe")
    ap.add_argument("--warm", action="store_true", help="read the inputs first instead")
    ap.add_argument("--interval", type=float, default=0.5)
    args = ap.parse_args(argv)
    with open(args.recipe) as f:
        inputs = re.findall(r'model\\("([^"]+)"\\)', f.read())
    if args.warm:
        warm_cache(inputs)
    else:
        drop_cache(inputs)
    env = dict(os.environ, MECHA_BENCH_TIMING="1")
    tick = os.sysconf("SC_CLK_TCK")
    t0 = time.perf_counter()
    proc = subprocess.Popen(["mecha", "run", args.recipe, "--overwrite"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    last = (0, 0, 0.0)
    while proc.poll() is None:
        time.sleep(args.interval)
        try:
            with open(f"/proc/{proc.pid}/io") as f:
                io = dict(line.split(": ") for line in f.read().splitlines())
            with open(f"/proc/{proc.pid}/stat") as f:
                stat = f.read().rsplit(")", 1)[1].split()
        except (OSError, ValueError):
            break
        cpu = (int(stat[11]) + int(stat[12])) / tick
        now = (int(io["read_bytes"]), int(io["write_bytes"]), cpu)
        dt = args.interval
        print(f"{time.perf_counter() - t0:6.1f} s  read {(now[0] - last[0]) / dt / 2**20:6.0f} MiB/s"
              f"  write {(now[1] - last[1]) / dt / 2**20:6.0f} MiB/s  cores {(now[2] - last[2]) / dt:4.2f}",
              flush=True)
        last = now
    err = proc.stderr.read() if proc.stderr else ""
    proc.wait()
    print(f"wall {time.perf_counter() - t0:.2f} s, exit {proc.returncode}")
    for line in err.splitlines():
        if line.startswith("mecha-timing"):
            print(line)
    return proc.returncode


if __name__ == "__main__":
    raise SystemExit(main())
