"""Write full-size synthetic SD1.5 checkpoints (fp16, ~2.1 GB each) for the benchmarks.

    python bench/make_models.py            # bench/models/sd1_0.safetensors ... sd1_7.safetensors
    python bench/make_models.py -n 3 --arch sd1 --dtype float16
    python bench/make_models.py -n 2 --arch sdxl    # SDXL-sized (6.9 GB each), for the I/O floor

Real key names and shapes (from the architecture inventory), random values, no EMA weights (like
the common pruned checkpoints). Files that already exist are kept. Uses `mechalang.synth`, which
writes tensor by tensor, so generating a model needs little memory.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
MODELS = os.path.join(HERE, "models")


def model_path(arch: str, i: int, dtype: str = "float16") -> str:
    suffix = "" if dtype == "float16" else f"_{dtype}"
    return os.path.join(MODELS, f"{arch}_{i}{suffix}.safetensors")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=8, help="number of models (default 8)")
    ap.add_argument("--arch", default="sd1")
    ap.add_argument("--dtype", default="float16")
    args = ap.parse_args(argv)

    from mechalang.synth import make_model

    os.makedirs(MODELS, exist_ok=True)
    todo = [i for i in range(args.n) if not os.path.exists(model_path(args.arch, i, args.dtype))]
    if todo:
        free = shutil.disk_usage(MODELS).free
        need = len(todo) * (7e9 if args.arch == "sdxl" else 2.2e9) * (2 if args.dtype == "float32" else 1)
        if free < need + 5e9:
            print(f"not enough disk space in {MODELS}: {len(todo)} models need about "
                  f"{need / 1e9:.1f} GB (+5 GB margin), {free / 1e9:.1f} GB free", file=sys.stderr)
            return 1
    for i in todo:
        path = model_path(args.arch, i, args.dtype)
        t = time.perf_counter()
        if args.arch == "sdxl":  # the same recipe as bench_lora.py's base (sdxl_0 is shared)
            keys = make_model("sdxl", path, dim_cap=None, dtype=args.dtype, optional=False, seed=i)
        else:
            keys = make_model(args.arch, path, dim_cap=None, dtype=args.dtype, seed=1000 + i,
                              drop=["model_ema.*"], scale=0.02)
        print(f"wrote {path}: {len(keys)} tensors, {os.path.getsize(path) / 1e9:.2f} GB "
              f"in {time.perf_counter() - t:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
