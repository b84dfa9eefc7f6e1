"""The hand-written baseline: a single pass over the keys in plain Python + torch, no mechalang.

    python bench/baseline_loop.py weighted_sum --alpha 0.3 -o out.safetensors a.safetensors b.safetensors
    python bench/baseline_loop.py add_difference --alpha 1.0 -o out.safetensors a b c
    python bench/baseline_loop.py n_average -o out.safetensors m0 m1 ... m7

What a careful user would write for one merge: parse the headers, compute the output header and
offsets up front, then for each key read that tensor from every input (seek + readinto, no mmap),
compute the formula in float32, cast back to the first input's dtype and write it at its offset.
Non-float tensors are copied from the first input. The output goes to a temporary file that is
flushed (unless --no-fsync) and renamed, like mecha does, so both sides produce a durable file.
"""

from __future__ import annotations

import argparse
import json
import os
import struct
import sys
import time

import torch

DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16,
          "BF16": torch.bfloat16, "I64": torch.int64, "I32": torch.int32, "I16": torch.int16,
          "I8": torch.int8, "U8": torch.uint8, "BOOL": torch.bool}
SIZES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1,
         "BOOL": 1}


def read_header(path: str) -> tuple[int, dict]:
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
    header.pop("__metadata__", None)
    return 8 + n, header


def read_tensor(f, data_start: int, entry: dict) -> torch.Tensor:
    begin, end = entry["data_offsets"]
    buf = bytearray(end - begin)
    f.seek(data_start + begin)
    f.readinto(buf)
    if not buf:
        return torch.empty(entry["shape"], dtype=DTYPES[entry["dtype"]])
    return torch.frombuffer(buf, dtype=DTYPES[entry["dtype"]]).reshape(entry["shape"])


def merge(method: str, tensors: list[torch.Tensor], alpha: float) -> torch.Tensor:
    xs = [t.to(torch.float32) for t in tensors]
    if method == "weighted_sum":
        return torch.lerp(xs[0], xs[1], alpha)
    if method == "add_difference":
        return torch.add(xs[0], xs[1] - xs[2], alpha=alpha)
    if method == "n_average":
        total = xs[0].clone()
        for x in xs[1:]:
            total += x
        return total / len(xs)
    raise SystemExit(f"unknown method {method}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("method", choices=["weighted_sum", "add_difference", "n_average"])
    ap.add_argument("inputs", nargs="+")
    ap.add_argument("-o", "--output", required=True)
    ap.add_argument("--alpha", type=float, default=0.5)
    ap.add_argument("--no-fsync", action="store_true")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: "
                    "torch's own, all cores)")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    if args.threads:
        torch.set_num_threads(args.threads)

    heads = [read_header(p) for p in args.inputs]
    first = heads[0][1]
    header, offset = {}, 0
    for key, e in first.items():
        n = SIZES[e["dtype"]]
        for d in e["shape"]:
            n *= d
        header[key] = {"dtype": e["dtype"], "shape": e["shape"], "data_offsets": [offset, offset + n]}
        offset += n
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    data_start = 8 + len(blob)

    files = [open(p, "rb", buffering=0) for p in args.inputs]
    tmp = args.output + ".baseline-tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    first_key = None
    try:
        os.pwrite(fd, struct.pack("<Q", len(blob)) + blob, 0)
        for key, e in first.items():
            if e["dtype"] in ("F16", "F32", "BF16", "F64"):
                ins = [read_tensor(f, ds, h[key]) for f, (ds, h) in zip(files, heads)]
                out = merge(args.method, ins, args.alpha).to(DTYPES[e["dtype"]])
                del ins
            else:
                out = read_tensor(files[0], heads[0][0], e)
            data = out.contiguous().reshape(-1).view(torch.uint8).numpy()
            os.pwrite(fd, data, data_start + header[key]["data_offsets"][0])
            del out, data
            if first_key is None:
                first_key = time.perf_counter() - t0
        if not args.no_fsync:
            os.fsync(fd)
    finally:
        os.close(fd)
        for f in files:
            f.close()
    os.replace(tmp, args.output)
    print(f"baseline-timing first_key_s={first_key or -1:.4f} "
          f"total_s={time.perf_counter() - t0:.4f}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
