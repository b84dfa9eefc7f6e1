"""The merge methods' own computation, without reading or writing: this checkout against another.

    python bench/bench_method_kernels.py                              # this checkout's times
    python bench/bench_method_kernels.py --against /path/to/other/checkout --rounds 3

Each method runs on float32 tensors of one Llama MLP weight (2816 × 1024, 2.9 M elements, the
bf16 values `bench_methods.py` merges: a base and two fine-tunes near it), single-threaded and with
glibc keeping freed buffers as `mecha run`'s executor does. Reported: the best of 5 calls per
method, in milliseconds. With `--against`, each round times the other checkout's methods and then
this one's, each in its own process, alternately (the machine may be shared: alternation spreads
its load over both), and prints the medians over the rounds and their ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHAPE = (2816, 1024)

CALLS = {
    "slerp": "S.slerp(base, ft0, alpha=0.3)",
    "nuslerp": "S.nuslerp(ft0, ft1, weight_a=1.0, weight_b=3.0)",
    "multislerp": "S.multislerp(base, ft0, ft1)",
    "karcher": "S.karcher_mean(base, ft0, ft1, max_iter=10, tol=1e-5)",
    "sce": "P.sce(d0, d1, select_topk=0.5)",
    "ties": "P.ties(d0, d1, density=0.2, normalize=True)",
    "dare_ties": "P.dare_ties(d0, d1, density=0.5, normalize=False, key='k')",
    "della": "P.della(d0, d1, density=0.5, epsilon=0.15, normalize=True, key='k')",
    "model_stock": "P.model_stock(base, ft0, ft1)",
    "geometric_median": "P.geometric_median(base, ft0, ft1)",
}


def child(methods: list[str]) -> None:
    import ctypes
    import time

    import torch

    torch.set_num_threads(1)
    try:  # as the executor does: buffers up to 16 MiB from the heap, freed memory kept
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 16 << 20)
        libc.mallopt(-1, 256 << 20)
    except (OSError, AttributeError):
        pass
    from mechalang.methods import sparse as P
    from mechalang.methods import spherical as S

    g = torch.Generator().manual_seed(0)
    base = (torch.randn(SHAPE, generator=g) * 0.02).bfloat16().float()
    ft0 = (base + 0.002 * torch.randn(SHAPE, generator=g)).bfloat16().float()
    ft1 = (base + 0.002 * torch.randn(SHAPE, generator=g)).bfloat16().float()
    names = dict(S=S, P=P, base=base, ft0=ft0, ft1=ft1, d0=ft0 - base, d1=ft1 - base)
    times = {}
    for name in methods:
        call = eval(f"lambda: {CALLS[name]}", names)
        call()
        best = float("inf")
        for _ in range(5):
            t = time.perf_counter()
            call()
            best = min(best, time.perf_counter() - t)
        times[name] = best * 1000
    print(json.dumps(times))


def run(checkout: Path, methods: list[str]) -> dict[str, float]:
    env = dict(os.environ, PYTHONPATH=str(checkout))
    out = subprocess.run([sys.executable, __file__, "--child", ",".join(methods)], env=env, check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--methods", default=",".join(CALLS))
    ap.add_argument("--against", type=Path, help="another checkout of mechalang to compare with")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    methods = [m.strip() for m in (args.child or args.methods).split(",") if m.strip()]
    unknown = [m for m in methods if m not in CALLS]
    if unknown:
        raise SystemExit(f"unknown method(s) {unknown}; known: {', '.join(CALLS)}")
    if args.child:
        child(methods)
        return
    ours: dict[str, list[float]] = {m: [] for m in methods}
    theirs: dict[str, list[float]] = {m: [] for m in methods}
    for _ in range(args.rounds):
        if args.against:
            for m, t in run(args.against, methods).items():
                theirs[m].append(t)
        for m, t in run(ROOT, methods).items():
            ours[m].append(t)
    print(f"{SHAPE[0]}x{SHAPE[1]} float32, 1 thread, best of 5 per round, median of {args.rounds} round(s); "
          f"load average {os.getloadavg()[0]:.1f}")
    for m in methods:
        line = f"{m:18s} {statistics.median(ours[m]):8.1f} ms"
        if args.against:
            other = statistics.median(theirs[m])
            line += f"   {args.against}: {other:8.1f} ms   {other / statistics.median(ours[m]):5.2f}x"
        print(line)


if __name__ == "__main__":
    main()
