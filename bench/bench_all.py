"""The performance benchmarks together, sized to run in about a quarter of an hour on 2 cores.

    python bench/bench_all.py --make                                  # once: the input models
    python bench/bench_all.py                                         # the four benchmarks
    python bench/bench_all.py --mergekit /path/to/venv/bin/mergekit-yaml

Runs, one after the other, each in its own process, and prints each one's summary and time:

1. `bench_merge.py --cases ws2,ad3 --sizes sd1 --cache cold,warm --no-baseline`: mecha against
   the I/O floor, SD1.5-sized inputs (2 and 3 × 2.1 GB), cold and warm;
2. `bench_merge.py --cases ws2,ad3 --sizes sdxl --cache cold --no-baseline` and `--cases ws2
   --cache warm`: the same with SDXL-sized inputs (6.9 GB each; three of them do not stay in the
   page cache of a 24 GB machine, so add_difference is timed cold only);
3. `bench_methods.py`: the merge methods against mergekit (when `--mergekit` is given; mecha's
   times alone otherwise) on three small Llama-shaped models;
4. `bench_scale.py`: TIES of three 7B-shaped models, 4 of 32 layers, with the 7B and 70B
   projections.

`--rounds` (default 2) sets the alternated rounds of the two bench_merge runs; the others run one.
Their figures go to bench/results/ as each script writes them. `--make` writes the inputs that are
missing (3 SD1.5-sized and 3 SDXL-sized checkpoints, about 27 GB, and the Llama models; bench_scale
writes its sparse folders itself) and is timed apart: it is set-up, not a benchmark. `--only`
picks some of them by name (merge_sd1, merge_sdxl, merge_sdxl_warm, methods, scale).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
SUITE = ("merge_sd1", "merge_sdxl", "merge_sdxl_warm", "methods", "scale")


def commands(args: argparse.Namespace) -> dict[str, list[str]]:
    py = sys.executable

    def merge(cases: str, size: str, cache: str) -> list[str]:
        return [py, str(BENCH / "bench_merge.py"), "--cases", cases, "--sizes", size, "--cache", cache,
                "--rounds", str(args.rounds), "--no-baseline"]

    methods = [py, str(BENCH / "bench_methods.py")]
    if args.mergekit:
        methods += ["--mergekit", args.mergekit]
    return {
        "merge_sd1": merge("ws2,ad3", "sd1", "cold,warm"),
        # three SDXL-sized inputs do not stay in the page cache of a 24 GB machine: ad3 cold only
        "merge_sdxl": merge("ws2,ad3", "sdxl", "cold"),
        "merge_sdxl_warm": merge("ws2", "sdxl", "warm"),
        "methods": methods,
        "scale": [py, str(BENCH / "bench_scale.py")],
    }


def make(names: list[str]) -> None:
    py = sys.executable
    steps = []
    if "merge_sd1" in names:
        steps.append([py, str(BENCH / "make_models.py"), "-n", "3"])
    if "merge_sdxl" in names or "merge_sdxl_warm" in names:
        steps.append([py, str(BENCH / "make_models.py"), "-n", "3", "--arch", "sdxl"])
    if "methods" in names:
        steps.append([py, str(BENCH / "bench_methods.py"), "--make-only"])
    t = time.perf_counter()
    for cmd in steps:
        subprocess.run(cmd, check=True)
    print(f"set-up: {time.perf_counter() - t:.0f} s")


def summary(name: str, out: str) -> list[str]:
    """The lines of a benchmark's output worth repeating at the end."""
    lines = out.splitlines()
    if name.startswith("merge"):
        return [ln.strip() for ln in lines if ln.startswith("==") or ln.strip().startswith("median")]
    if name == "methods":
        start = next((i for i, ln in enumerate(lines) if ln.startswith("method")), 0)
        return [ln for ln in lines[start:] if ln.strip()]
    return [ln for ln in lines if ln.strip()][-6:]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mergekit", default=None, help="mergekit-yaml of an environment with mergekit")
    ap.add_argument("--rounds", type=int, default=2, help="alternated rounds of bench_merge (default 2)")
    ap.add_argument("--only", default=",".join(SUITE), help="some of: " + ", ".join(SUITE))
    ap.add_argument("--make", action="store_true", help="write the missing input models, then stop")
    args = ap.parse_args(argv)
    names = [n for n in args.only.split(",") if n]
    unknown = [n for n in names if n not in SUITE]
    if unknown:
        ap.error(f"unknown benchmark {unknown[0]!r} (expected some of {', '.join(SUITE)})")
    if args.make:
        make(names)
        return 0
    cmds = commands(args)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    report: list[tuple[str, float, int, list[str]]] = []
    start = time.perf_counter()
    for name in names:
        print(f"\n### {name}: {' '.join(Path(c).name if c.endswith('.py') else c for c in cmds[name][1:])}",
              flush=True)
        t = time.perf_counter()
        proc = subprocess.run(cmds[name], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        seconds = time.perf_counter() - t
        print(proc.stdout, end="", flush=True)
        report.append((name, seconds, proc.returncode, summary(name, proc.stdout)))
    total = time.perf_counter() - start
    print("\n### summary")
    for name, seconds, rc, lines in report:
        status = "" if rc == 0 else f"  (exit {rc})"
        print(f"{name}: {seconds / 60:.1f} min{status}")
        for ln in lines:
            print("    " + ln)
    print(f"total: {total / 60:.1f} min on {os.cpu_count()} cores, load average at the end "
          f"{os.getloadavg()[0]:.1f}")
    return max((rc for _, _, rc, _ in report), default=0)


if __name__ == "__main__":
    raise SystemExit(main())
