"""TIES on three 7B-shaped Llama checkpoints: time, peak RSS, bytes/s, and the projection to 70B.

    python bench/bench_scale.py                     # 4 of the 32 layers (+ embeddings and head)
    python bench/bench_scale.py --layers 32         # the whole 7B shape (3 × 13.5 GB)
    python bench/bench_scale.py --layers 2 --fill 1 # the first layer's tensors hold random values

Three Llama-2-7B-shaped bf16 Hugging Face folders (base, ft0, ft1: sharded, Llama's key names and
shapes, written by bench_shards.write_sparse_folder) are merged by `mecha run` with

    export base + ties(ft0 - base, ft1 - base, density=0.2) to "out/" as hf(shard_size=…)

The inputs are SPARSE (each shard's data a hole, read as zeros at memory speed), so the figure is
the compute side: conversions, the magnitude selection of every task vector, the sign vote and the
disjoint mean, and writing the output (for real, then deleted). TIES has no zero fast path, but
zeros are cheaper than real values (fewer distinct magnitudes, uniform signs), so the sparse figure
is optimistic: `--fill K` writes random values (base ~ N(0, 0.02), ft = base + N(0, 0.002)) into
the first K layers of all three models to measure that (it costs 3 × 405 MB of disk per layer).

`--layers N` keeps the first N decoder layers (the embeddings and the head, the largest tensors,
always stay) so that the run fits a time budget; the full 7B and the 70B times are projected from
the measured rate in input bytes per second (three models read). The rate includes interpreter
and torch start, so projections from few layers are slightly pessimistic.

Reported: wall time (interpreter and torch start included), peak RSS of the `mecha` process
(os.wait4) and, sampled every 50 ms from /proc, when it was reached; input bytes per second;
projected times for the full 7B and for Llama-2-70B (80 layers, hidden 8192) at that rate.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from bench_shards import SHAPES, model_bytes, write_sparse_folder  # noqa: E402

NAMES = ("base", "ft0", "ft1")


def fill_layers(folder: str, layers: int, seed: int, base_folder: str | None) -> None:
    """Random bf16 values in every tensor of the first `layers` decoder layers (and nothing else):
    N(0, 0.02) for the base; the base's values plus N(0, 0.002) for a fine-tune."""
    import torch

    wanted = tuple(f"model.layers.{i}." for i in range(layers))
    gen = torch.Generator().manual_seed(seed)
    for name in sorted(os.listdir(folder)):
        if not name.endswith(".safetensors"):
            continue
        path = os.path.join(folder, name)
        with open(path, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
            header = json.loads(f.read(n))
        header.pop("__metadata__", None)
        for key, info in header.items():
            if not key.startswith(wanted):
                continue
            lo, hi = info["data_offsets"]
            count = (hi - lo) // 2
            if base_folder is None:
                values = torch.randn(count, generator=gen).mul_(0.02)
            else:
                with open(os.path.join(base_folder, name), "rb") as f:
                    f.seek(8 + n + lo)
                    raw = bytearray(f.read(hi - lo))
                values = torch.frombuffer(raw, dtype=torch.bfloat16).float()
                values += torch.randn(count, generator=gen).mul_(0.002)
            data = values.to(torch.bfloat16).view(torch.uint8).numpy().tobytes()
            fd = os.open(path, os.O_WRONLY)
            try:
                os.pwrite(fd, data, 8 + n + lo)
            finally:
                os.close(fd)


class RssSampler(threading.Thread):
    """Samples a process's VmRSS every `period` seconds: when its peak happened, and the series."""

    def __init__(self, pid: int, period: float = 0.05):
        super().__init__(daemon=True)
        self.pid, self.period = pid, period
        self.samples: list[tuple[float, int]] = []
        self.done = threading.Event()

    def run(self) -> None:
        t0 = time.perf_counter()
        while not self.done.is_set():
            try:
                with open(f"/proc/{self.pid}/status") as f:
                    for line in f:
                        if line.startswith("VmRSS:"):
                            self.samples.append((time.perf_counter() - t0, int(line.split()[1]) * 1024))
                            break
            except OSError:
                break
            self.done.wait(self.period)


def run_mecha(cmd: list[str], cwd: str, env: dict) -> tuple[float, int, RssSampler, str]:
    with tempfile.TemporaryFile() as fo:
        t = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=fo, stderr=subprocess.STDOUT, cwd=cwd, env=env)
        sampler = RssSampler(proc.pid)
        sampler.start()
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t
        sampler.done.set()
        sampler.join()
        fo.seek(0)
        out = fo.read().decode(errors="replace")
    if status != 0:
        raise SystemExit(f"mecha run failed:\n{out[-3000:]}")
    return wall, usage.ru_maxrss * 1024, sampler, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", choices=sorted(SHAPES), default="7b")
    ap.add_argument("--layers", type=int, default=4, help="decoder layers to keep (default 4)")
    ap.add_argument("--fill", type=int, default=0, help="layers holding random values (default 0)")
    ap.add_argument("--density", type=float, default=0.2)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--shard-size", default="5GB", help="input and output shards (default 5GB)")
    ap.add_argument("--dir", default=None, help="work folder (default: a temporary one)")
    ap.add_argument("--trace", default=None, help="write the RSS samples (seconds, bytes) as JSON here")
    args = ap.parse_args()
    sys.path.insert(0, os.path.dirname(HERE))
    from mechalang.units import parse_size

    all_layers = SHAPES[args.shape][3]
    layers = min(args.layers, all_layers)
    shard = parse_size(args.shard_size)
    work = args.dir or tempfile.mkdtemp(prefix="mecha-bench-scale-")
    os.makedirs(work, exist_ok=True)
    out_dir = os.path.join(work, "out")
    try:
        size = 0
        for name in NAMES:
            shutil.rmtree(os.path.join(work, name), ignore_errors=True)
            size = write_sparse_folder(os.path.join(work, name), args.shape, shard, layers)
        if args.fill:
            for i, name in enumerate(NAMES):
                fill_layers(os.path.join(work, name), min(args.fill, layers), seed=i,
                            base_folder=None if name == "base" else os.path.join(work, "base"))
        with open(os.path.join(work, "r.mecha"), "w") as f:
            f.write("".join(f'let {n} = model("{n}")\n' for n in NAMES))
            f.write(f"export base + ties(ft0 - base, ft1 - base, density={args.density}) "
                    f'to "out/" as hf(shard_size="{shard}")\n')
        env = dict(os.environ, MECHA_FSYNC="0", PYTHONPATH=os.path.dirname(HERE))
        cmd = [sys.executable, "-m", "mechalang", "run", "r.mecha", "--threads", str(args.threads)]
        shutil.rmtree(out_dir, ignore_errors=True)
        print(f"shape {args.shape}, {layers} of {all_layers} layers ({args.fill} filled): "
              f"3 × {size / 1e9:.2f} GB bf16, ties density {args.density}, {args.threads} threads",
              flush=True)
        wall, peak, sampler, _ = run_mecha(cmd, work, env)
        shutil.rmtree(out_dir, ignore_errors=True)
    finally:
        if args.dir is None:
            shutil.rmtree(work, ignore_errors=True)
    when = max(sampler.samples, key=lambda s: s[1])[0] if sampler.samples else float("nan")
    rate = 3 * size / wall
    full7 = 3 * model_bytes(args.shape)
    full70 = 3 * model_bytes("70b")
    print(f"time {wall:.1f} s, peak RSS {peak / 2**30:.2f} GiB (sampled peak at {when:.1f} s), "
          f"{rate / 1e6:.0f} MB/s of input")
    print(f"projected at this rate: {args.shape} ({3} × {full7 / 3e9:.1f} GB) {full7 / rate / 60:.1f} min, "
          f"70b (3 × {full70 / 3e9:.1f} GB) {full70 / rate / 60:.1f} min")
    if args.trace:
        with open(args.trace, "w") as f:
            json.dump(sampler.samples, f)


if __name__ == "__main__":
    main()
