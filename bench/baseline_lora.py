"""Hand-written LoRA baselines: plain Python + torch, no mechalang.

    python bench/baseline_lora.py bake BASE LORA MAP.json -o OUT --strength 0.8
    python bench/baseline_lora.py extract TUNED BASE -o OUT --rank 64

bake: what a careful user writes to bake a kohya LoRA into a checkpoint in one pass. Headers
parsed, the output header and offsets computed up front; for each key of the base, the tensor is
read (seek + readinto); if the LoRA updates it (MAP.json: checkpoint key -> LoRA module name, the
naming table a user of one architecture carries: key -> [(module, rows)]), W + s·(α/r)·up·down is computed in float32 and cast
back; written at its offset. Temporary file, fsync, rename.

extract: per 2-D/4-D key, the float32 delta tuned − base factored by `torch.linalg.svd`
(U·S truncated to the rank as up, Vᵀ as down, α = rank), written as kohya-style tensors.
"""

from __future__ import annotations

import argparse
import json
import os
import struct
import sys
import time

import torch
from baseline_loop import SIZES, read_header, read_tensor


def _layout(entries: list[tuple[str, str, list[int]]]) -> tuple[dict, bytes]:
    header, offset = {}, 0
    for key, dtype, shape in entries:
        n = SIZES[dtype]
        for d in shape:
            n *= d
        header[key] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + n]}
        offset += n
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    return header, struct.pack("<Q", len(blob)) + blob


def _write(fd: int, data_start: int, header: dict, key: str, t: torch.Tensor) -> None:
    data = t.contiguous().reshape(-1).view(torch.uint8).numpy()
    os.pwrite(fd, data, data_start + header[key]["data_offsets"][0])


def bake(args) -> None:
    base_start, base = read_header(args.base)
    lora_start, lora = read_header(args.lora)
    with open(args.map) as f:
        modules = json.load(f)
    header, blob = _layout([(k, e["dtype"], e["shape"]) for k, e in base.items()])
    tmp = args.output + ".baseline-tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    fb, fl = open(args.base, "rb", buffering=0), open(args.lora, "rb", buffering=0)
    try:
        os.pwrite(fd, blob, 0)
        for key, e in base.items():
            w = read_tensor(fb, base_start, e)
            pieces = modules.get(key)
            if pieces:
                out = w.float()
                for module, rows in pieces:  # several for a fused weight (CLIP-G q, k, v rows)
                    up = read_tensor(fl, lora_start, lora[module + ".lora_up.weight"]).float()
                    down = read_tensor(fl, lora_start, lora[module + ".lora_down.weight"]).float()
                    rank = down.shape[0]
                    alpha = float(read_tensor(fl, lora_start, lora[module + ".alpha"])) \
                        if module + ".alpha" in lora else rank
                    delta = up.reshape(up.shape[0], -1) @ down.reshape(rank, -1)
                    target = out if rows is None else out[rows[0]:rows[1]]
                    target += (args.strength * alpha / rank) * delta.reshape(target.shape)
                w = out.to(w.dtype)
            _write(fd, len(blob), header, key, w)
        os.fsync(fd)
    finally:
        os.close(fd)
        fb.close()
        fl.close()
    os.replace(tmp, args.output)


def extract(args) -> None:
    t_start, tuned = read_header(args.tuned)
    b_start, base = read_header(args.base)
    keys = [k for k, e in tuned.items() if len(e["shape"]) in (2, 4) and e["dtype"] in ("F16", "BF16", "F32")
            and k in base]
    entries = []
    for k in keys:
        shape = tuned[k]["shape"]
        r = min(args.rank, shape[0], int(torch.tensor(shape[1:]).prod()))
        module = k[: -len(".weight")] if k.endswith(".weight") else k
        entries += [(module + ".lora_down.weight", "F16", [r] + shape[1:]),
                    (module + ".lora_up.weight", "F16", [shape[0], r] + ([1, 1] if len(shape) == 4 else [])),
                    (module + ".alpha", "F16", [])]
    header, blob = _layout(entries)
    tmp = args.output + ".baseline-tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    ft, fb = open(args.tuned, "rb", buffering=0), open(args.base, "rb", buffering=0)
    try:
        os.pwrite(fd, blob, 0)
        for k in keys:
            delta = read_tensor(ft, t_start, tuned[k]).float() - read_tensor(fb, b_start, base[k]).float()
            out = delta.shape[0]
            u, s, vh = torch.linalg.svd(delta.reshape(out, -1), full_matrices=False)
            r = min(args.rank, s.shape[0])
            module = k[: -len(".weight")] if k.endswith(".weight") else k
            up = (u[:, :r] * s[:r]).reshape(header[module + ".lora_up.weight"]["shape"])
            _write(fd, len(blob), header, module + ".lora_up.weight", up.half())
            _write(fd, len(blob), header, module + ".lora_down.weight",
                   vh[:r].reshape(header[module + ".lora_down.weight"]["shape"]).half())
            _write(fd, len(blob), header, module + ".alpha", torch.tensor(float(r)).half())
        os.fsync(fd)
    finally:
        os.close(fd)
        ft.close()
        fb.close()
    os.replace(tmp, args.output)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="what", required=True)
    b = sub.add_parser("bake")
    b.add_argument("base")
    b.add_argument("lora")
    b.add_argument("map")
    b.add_argument("-o", "--output", required=True)
    b.add_argument("--strength", type=float, default=1.0)
    e = sub.add_parser("extract")
    e.add_argument("tuned")
    e.add_argument("base")
    e.add_argument("-o", "--output", required=True)
    e.add_argument("--rank", type=int, default=64)
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    (bake if args.what == "bake" else extract)(args)
    print(f"baseline-timing total_s={time.perf_counter() - t0:.4f}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
