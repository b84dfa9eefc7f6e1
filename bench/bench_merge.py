"""Benchmark mecha against a hand-written single-pass loop and against the disk's I/O floor.

    python bench/make_models.py -n 3                  # once: synthetic SD1.5 fp16 models
    python bench/make_models.py -n 2 --arch sdxl      # once: two SDXL-sized models (6.9 GB each)
    python bench/bench_merge.py                       # `mecha run RECIPE` vs baseline and floor
    python bench/bench_merge.py --cases ws2,ad3 --sizes sd1,sdxl --cache cold,warm
    python bench/bench_merge.py --engine-only         # a hand-built Plan through execute() instead
    python bench/bench_merge.py --cases ws2 --rounds 5 --no-fsync --no-floor
    python bench/bench_merge.py --cases ws2 --cache cold --no-baseline --before /tmp/before

For each case the sides run alternately, N rounds, each in its own process, on the same input
files: the I/O floor (bench_floor.py: every input byte read once and an output of the merged size
written and flushed, no arithmetic; `--floor-strategies` picks which of its strategies are timed,
the fastest counting), `mecha run`, bench/baseline_loop.py, and with `--before DIR` the same
`mecha run` with another checkout's mechalang (PYTHONPATH=DIR: the version before a change).
Reported: the median wall time of each side, mecha / baseline, mecha / floor (and the ratio of
each alternated pair, since the shared disk's throughput drifts between minutes), mecha's peak
RSS (from `os.wait4`), and its time to the first key written (from execute()'s start, and from
process start; torch's import time is measured apart). Results also go to
bench/results/<case>_<size>_<cache>_*.json.

--cache warm reads the inputs once beforehand (they stay in the page cache if memory allows; the
share still cached is checked before every run and printed when below 99%). --cache cold evicts
them before every run of every side: `sync; echo 3 > /proc/sys/vm/drop_caches` is not permitted
on the benchmark machine (read-only even for root in its container), so bench_floor.drop_cache()
does `sync` and `posix_fadvise(POSIX_FADV_DONTNEED)` on each input, and checks with `mincore`
that none of its pages stayed cached (printed when any did).

Cases: ws2 = weighted_sum of 2 models (alpha 0.3), ad3 = add_difference of 3 (alpha 1.0),
avg8 = n_average of 8. Sizes: sd1 (2.13 GB per model), sdxl (6.88 GB per model).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
MODELS = os.path.join(HERE, "models")
RESULTS = os.path.join(HERE, "results")
sys.path.insert(0, HERE)
from bench_floor import STRATEGIES, drop_cache, resident_fraction  # noqa: E402
from make_models import model_path  # noqa: E402

CASES = {
    "ws2": ("weighted_sum", 2, 0.3),
    "ad3": ("add_difference", 3, 1.0),
    "avg8": ("n_average", 8, None),
}


def run_child(cmd: list[str], env: dict | None = None) -> dict:
    """Run `cmd`, return wall seconds, peak RSS (bytes), CPU seconds, stdout, stderr and its start
    time."""
    with tempfile.TemporaryFile() as fo, tempfile.TemporaryFile() as fe:
        start_unix = time.time()
        t = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=fo, stderr=fe, env=env, cwd=HERE)
        _, status, usage = os.wait4(proc.pid, 0)  # reaps the child: its own rusage
        wall = time.perf_counter() - t
        proc.returncode = os.waitstatus_to_exitcode(status)
        fo.seek(0)
        fe.seek(0)
        out, err = fo.read(), fe.read()
    if proc.returncode != 0:
        raise SystemExit(f"command failed ({proc.returncode}): {' '.join(cmd)}\n"
                         f"{err.decode(errors='replace')[-3000:]}")
    return {"wall": wall, "rss": usage.ru_maxrss * 1024, "cpu": usage.ru_utime + usage.ru_stime,
            "user": usage.ru_utime, "sys": usage.ru_stime, "stdout": out.decode(),
            "stderr": err.decode(), "start_unix": start_unix}


def warm(paths: list[str]) -> None:
    buf = bytearray(16 << 20)
    for p in paths:
        with open(p, "rb", buffering=0) as f:
            while f.readinto(buf):
                pass


def recipe_for(method: str, inputs: list[str], out: str, alpha: float | None) -> str:
    lines = [f'let m{i} = model("{p}")' for i, p in enumerate(inputs)]
    args = ", ".join(f"m{i}" for i in range(len(inputs)))
    if alpha is not None:
        args += f", alpha={alpha}"
    lines.append(f'export {method}({args}) to "{out}"')
    return "\n".join(lines) + "\n"


def torch_import_seconds(rounds: int) -> float:
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import torch"], check=True)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def _resident(paths: list[str]) -> list[float]:
    return [resident_fraction(p) for p in paths]


def bench_case(name: str, size: str, cache: str, args) -> dict:
    method, n, alpha = CASES[name]
    inputs = [model_path(size, i) for i in range(n)]
    missing = [p for p in inputs if not os.path.exists(p)]
    if missing:
        raise SystemExit(f"missing {missing[0]}: run bench/make_models.py -n {n} --arch {size} "
                         f"first")
    tag = f"{name}_{size}"
    out_m = os.path.join(MODELS, f"out_{tag}_mecha.safetensors")
    out_b = os.path.join(MODELS, f"out_{tag}_baseline.safetensors")
    out_f = os.path.join(MODELS, f"out_{tag}_floor.bin")
    need = os.path.getsize(inputs[0]) + (2 << 30)
    free = shutil.disk_usage(MODELS).free
    if free < need:
        raise SystemExit(f"not enough disk space for {tag}'s outputs: {need / 1e9:.1f} GB needed, "
                         f"{free / 1e9:.1f} GB free")
    alpha_args = [] if alpha is None else ["--alpha", str(alpha)]
    fsync_args = ["--no-fsync"] if args.no_fsync else []
    base_cmd = [sys.executable, "baseline_loop.py", method, *inputs, "-o", out_b, *alpha_args,
                *fsync_args]
    if args.baseline_threads:
        base_cmd += ["--threads", str(args.baseline_threads)]
    env = dict(os.environ, MECHA_BENCH_TIMING="1")
    if args.no_fsync:
        env["MECHA_FSYNC"] = "0"
    if args.engine_only:
        mecha_cmd = [sys.executable, "engine_run.py", method, *inputs, "-o", out_m, *alpha_args,
                     *fsync_args]
        if args.threads:
            mecha_cmd += ["--threads", str(args.threads)]
        if args.elementwise:
            mecha_cmd.append("--elementwise")
    else:
        recipe = os.path.join(MODELS, f"bench_{tag}.mecha")
        with open(recipe, "w") as f:
            f.write(recipe_for(method, inputs, out_m, alpha))
        mecha = shutil.which("mecha") or "mecha"
        mecha_cmd = [mecha, "run", recipe, "--overwrite"]
        if args.threads:
            mecha_cmd += ["--threads", str(args.threads)]

    cold = cache == "cold"
    sides = ["floor"] if args.floor else []
    sides.append("mecha")
    if args.before:
        sides.append("before")
    if args.baseline:
        sides.append("baseline")
    print(f"\n== {name} {size}, {cache} cache: {method} of {n} models "
          f"({'engine only' if args.engine_only else 'mecha run'}"
          f"{', no fsync' if args.no_fsync else ''}; sides {', '.join(sides)})", flush=True)
    if not cold:
        warm(inputs)
    floor_strategies = (args.floor_strategies or
                        ("readahead" if cold else "cached-direct")).split(",")
    out_size = os.path.getsize(inputs[0])  # the merge of same-layout models: the size of one
    rows: dict[str, list[dict]] = {s: [] for s in sides}
    for r in range(args.rounds):
        for side in sides:
            for p in (out_m, out_b, out_f):
                if os.path.exists(p):
                    os.unlink(p)
            # cold: evict the inputs before every run; warm: check they are still cached
            resident = drop_cache(inputs) if cold else _resident(inputs)
            if side == "floor":
                fl = {}
                for k, strategy in enumerate(floor_strategies):
                    if k:
                        resident = drop_cache(inputs) if cold else _resident(inputs)
                    t = time.perf_counter()
                    STRATEGIES[strategy](inputs, out_f, out_size)
                    fl[strategy] = time.perf_counter() - t
                    os.unlink(out_f)
                best = min(fl, key=fl.get)
                res = {"wall": fl[best], "strategy": best, "strategies": fl}
                extra = f"  ({', '.join(f'{k} {v:.2f} s' for k, v in fl.items())})"
            else:
                if side == "before":  # the same command with another checkout's mechalang
                    res = run_child(mecha_cmd, dict(env, PYTHONPATH=os.path.abspath(args.before)))
                else:
                    res = run_child(mecha_cmd if side == "mecha" else base_cmd,
                                    env if side == "mecha" else None)
                extra = (f"  peak RSS {res['rss'] / 2**20:6.0f} MiB, CPU {res['user']:.1f} s user "
                         f"+ {res['sys']:.1f} s system")
            res["resident_before"] = resident
            if side == "mecha":
                m = re.search(r"mecha-timing first_key_s=(\S+) first_key_unix=(\S+) total_s=(\S+)",
                              res["stderr"])
                if m:
                    res["first_key_s"] = float(m.group(1))
                    res["first_key_from_spawn_s"] = float(m.group(2)) - res["start_unix"]
                    extra += (f", first key {res['first_key_s']:.3f} s after execute() "
                              f"({res['first_key_from_spawn_s']:.2f} s after spawn)")
            if any(x > 0.01 for x in resident) if cold else any(x < 0.99 for x in resident):
                extra += " [inputs cached before: " + ", ".join(f"{x:.0%}" for x in resident) + "]"
            rows[side].append(res)
            print(f"  round {r + 1} {side:8s} {res['wall']:7.2f} s{extra}", flush=True)
    for p in (out_m, out_b, out_f):
        if os.path.exists(p):
            os.unlink(p)
    med = {s: statistics.median(x["wall"] for x in rows[s]) for s in rows}
    mecha_rows = rows["mecha"]
    summary = {
        "case": name, "size": size, "cache": cache, "method": method, "models": n,
        "rounds": args.rounds, "mode": "engine-only" if args.engine_only else "mecha run",
        "fsync": not args.no_fsync, "elementwise_flag": bool(args.elementwise),
        "baseline_threads": args.baseline_threads,
        "medians_s": med,
        "mecha_peak_rss_mib": max(x["rss"] for x in mecha_rows) / 2**20,
        "mecha_first_key_s": statistics.median(x.get("first_key_s", -1) for x in mecha_rows),
        "mecha_first_key_from_spawn_s": statistics.median(
            x.get("first_key_from_spawn_s", -1) for x in mecha_rows),
        "walls": {s: [x["wall"] for x in rows[s]] for s in rows},
        "cpu_s": {s: [x["cpu"] for x in rows[s] if "cpu" in x] for s in rows},
        "loadavg_after": os.getloadavg(),
    }
    line = "  median: " + ", ".join(f"{s} {v:.2f} s" for s, v in med.items())
    if "baseline" in med:
        summary["ratio"] = med["mecha"] / med["baseline"]
        summary["baseline_peak_rss_mib"] = max(x["rss"] for x in rows["baseline"]) / 2**20
        line += f"; mecha / baseline {summary['ratio']:.2f}"
    if "before" in med:
        summary["before_ratio"] = med["mecha"] / med["before"]
        line += f"; mecha / before {summary['before_ratio']:.2f}"
    if "floor" in med:
        summary["floor_ratio"] = med["mecha"] / med["floor"]
        # the ratio of each alternated pair: robust to the disk's throughput drifting between rounds
        pairs = [m["wall"] / f["wall"] for m, f in zip(rows["mecha"], rows["floor"])]
        summary["floor_ratio_pairs"] = pairs
        summary["floor_strategies"] = [x["strategies"] for x in rows["floor"]]
        line += (f"; mecha / floor {summary['floor_ratio']:.2f} (pairs "
                 + ", ".join(f"{x:.2f}" for x in pairs) + ")")
    line += (f"; peak RSS mecha {summary['mecha_peak_rss_mib']:.0f} MiB"
             + (f", baseline {summary['baseline_peak_rss_mib']:.0f} MiB" if "baseline" in med
                else "")
             + f"; first key {summary['mecha_first_key_s']:.3f} s after execute() "
               f"({summary['mecha_first_key_from_spawn_s']:.2f} s after spawn)")
    print(line, flush=True)
    return summary


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", default="ws2,ad3,avg8")
    ap.add_argument("--sizes", default="sd1",
                    help="model sizes, comma-separated: sd1 (2.1 GB each), sdxl (6.9 GB each)")
    ap.add_argument("--cache", default="warm",
                    help="warm (inputs read beforehand), cold (evicted before every run) or both: "
                         "cold,warm")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--floor", action=argparse.BooleanOptionalAction, default=True,
                    help="time the I/O floor (bench_floor.py) alternately with mecha (default: on)")
    ap.add_argument("--floor-strategies", default=None,
                    help="floor strategies timed each round, the fastest counting (default: "
                         "readahead cold, cached-direct warm: the fastest measured; all: "
                         + ",".join(STRATEGIES) + ")")
    ap.add_argument("--baseline", action=argparse.BooleanOptionalAction, default=True,
                    help="time the hand-written loop baseline_loop.py too (default: on)")
    ap.add_argument("--before", metavar="DIR", default=None,
                    help="also time `mecha` with PYTHONPATH=DIR, another checkout of mechalang "
                         "(e.g. `git worktree add /tmp/before main`), alternately")
    ap.add_argument("--engine-only", action="store_true",
                    help="build the Plan in Python and call execute() (no recipe, no front end)")
    ap.add_argument("--elementwise", action="store_true",
                    help="(engine only) declare the method element-wise, as the registry should")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--no-fsync", action="store_true", help="neither side flushes its output")
    ap.add_argument("--baseline-threads", type=int, default=None,
                    help="torch threads in the baseline (default: torch's default, all cores)")
    args = ap.parse_args(argv)
    os.makedirs(RESULTS, exist_ok=True)
    imp = torch_import_seconds(3)
    print(f"torch import alone: {imp:.2f} s (median of 3); load average {os.getloadavg()}")
    for size in args.sizes.split(","):
        for cache in args.cache.split(","):
            if cache not in ("cold", "warm"):
                raise SystemExit(f"--cache: cold or warm, not {cache!r}")
            for name in args.cases.split(","):
                summary = bench_case(name, size, cache, args)
                summary["torch_import_s"] = imp
                tag = ("engine" if args.engine_only else "mecha") \
                    + ("_ew" if args.elementwise else "") \
                    + ("_nofsync" if args.no_fsync else "") \
                    + (f"_bt{args.baseline_threads}" if args.baseline_threads else "")
                with open(os.path.join(RESULTS, f"{name}_{size}_{cache}_{tag}.json"), "w") as f:
                    json.dump(summary, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
