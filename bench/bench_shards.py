"""Merging two sharded Hugging Face folders into a sharded folder: `mecha run` vs a hand-written loop.

    python bench/bench_shards.py                    # Llama 1B-shaped (TinyLlama: 1.1B params, bf16)
    python bench/bench_shards.py --shape 7b         # Llama-2-7B-shaped (6.7B params, 13.5 GB per model)
    python bench/bench_shards.py --shape tiny --rounds 1    # a smoke test

The inputs are two synthetic bf16 folders (`config.json`, `model-0000i-of-0000n.safetensors`
shards of at most --shard-size, `model.safetensors.index.json`) with Llama's real key names and
shapes, written SPARSE: each shard's header is real and its data section a hole (the file is sized
with truncate), so 2 × 13.5 GB cost no disk. Reading a hole returns zeros at memory speed, the same
for both sides. The output (a real, sharded folder) is written to disk by both sides.

Timed, alternately, each in its own process (interpreter and torch start included):
  mecha     `mecha run` of `export weighted_sum(a, b, alpha=0.5) to "out/" as hf(shard_size=…)`
  baseline  a careful hand-written loop: parse both indexes and shard headers, plan the output
            shards and offsets, then on a thread pool (one thread per core) for each key and each
            1M-element slice: pread the slice from both inputs, compute in fp32, cast to bf16,
            pwrite at its offset; write the index and copy config.json. pread into fresh buffers,
            no mmap: mapped pages would count in its resident set (and mmap was not faster here).
Both skip fsync (MECHA_FSYNC=0). Reported: median wall time per side, the ratio, and each side's
peak RSS (from os.wait4).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))

SHAPES = {  # vocab, hidden, intermediate, layers, heads, kv heads
    "tiny": (1000, 256, 688, 4, 4, 4),
    "1b": (32000, 2048, 5632, 22, 32, 4),
    "7b": (32000, 4096, 11008, 32, 32, 32),
    "70b": (32000, 8192, 28672, 80, 64, 8),  # Llama-2-70B
}


def llama_keys(shape: str, layers: int | None = None) -> list[tuple[str, list[int]]]:
    """Llama's keys and shapes; `layers` keeps only the first decoder layers (embeddings, final
    norm and head stay)."""
    vocab, hid, inter, all_layers, heads, kv = SHAPES[shape]
    layers = all_layers if layers is None else layers
    kvd = hid // heads * kv
    keys = [("model.embed_tokens.weight", [vocab, hid])]
    for i in range(layers):
        p = f"model.layers.{i}."
        keys += [(p + "self_attn.q_proj.weight", [hid, hid]), (p + "self_attn.k_proj.weight", [kvd, hid]),
                 (p + "self_attn.v_proj.weight", [kvd, hid]), (p + "self_attn.o_proj.weight", [hid, hid]),
                 (p + "mlp.gate_proj.weight", [inter, hid]), (p + "mlp.up_proj.weight", [inter, hid]),
                 (p + "mlp.down_proj.weight", [hid, inter]),
                 (p + "input_layernorm.weight", [hid]), (p + "post_attention_layernorm.weight", [hid])]
    keys += [("model.norm.weight", [hid]), ("lm_head.weight", [vocab, hid])]
    return keys


def nbytes(shape: list[int]) -> int:
    n = 2
    for d in shape:
        n *= d
    return n


def model_bytes(shape: str, layers: int | None = None) -> int:
    """The data bytes of a bf16 Llama of this shape."""
    return sum(nbytes(s) for _, s in llama_keys(shape, layers))


def write_sparse_folder(folder: str, shape: str, shard_size: int, layers: int | None = None) -> int:
    """A sharded bf16 folder whose shards' data are holes (`layers`: only the first decoder layers).
    Returns the model's data bytes."""
    os.makedirs(folder, exist_ok=True)
    keys = llama_keys(shape, layers)
    shards: list[list[tuple[str, list[int]]]] = [[]]
    size = 0
    for k, s in keys:
        if shards[-1] and size + nbytes(s) > shard_size:
            shards.append([])
            size = 0
        shards[-1].append((k, s))
        size += nbytes(s)
    wm, total = {}, 0
    for i, part in enumerate(shards):
        name = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        header, pos = {"__metadata__": {"format": "pt"}}, 0
        for k, s in part:
            header[k] = {"dtype": "BF16", "shape": s, "data_offsets": [pos, pos + nbytes(s)]}
            pos += nbytes(s)
            wm[k] = name
        raw = json.dumps(header).encode()
        raw += b" " * (-len(raw) % 8)
        with open(os.path.join(folder, name), "wb") as f:
            f.write(len(raw).to_bytes(8, "little") + raw)
            f.truncate(8 + len(raw) + pos)  # the data: a hole
        total += pos
    with open(os.path.join(folder, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": wm}, f)
    vocab, hid, inter, all_layers, heads, kv = SHAPES[shape]
    layers = all_layers if layers is None else layers
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump({"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": vocab,
                   "hidden_size": hid, "intermediate_size": inter, "num_hidden_layers": layers,
                   "num_attention_heads": heads, "num_key_value_heads": kv, "torch_dtype": "bfloat16"}, f)
    return total


BASELINE = r'''
import json, os, shutil, sys, threading
from concurrent.futures import ThreadPoolExecutor
import torch
a_dir, b_dir, out_dir, alpha, shard_size, threads = sys.argv[1:7]
alpha, shard_size, threads = float(alpha), int(shard_size), int(threads)
torch.set_num_threads(1)
SLICE = 1 << 20

def index(folder):
    wm = json.load(open(os.path.join(folder, "model.safetensors.index.json")))["weight_map"]
    where = {}
    for shard in dict.fromkeys(wm.values()):
        path = os.path.join(folder, shard)
        with open(path, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
            h = json.loads(f.read(n))
        h.pop("__metadata__", None)
        for k, v in h.items():
            where[k] = (path, 8 + n + v["data_offsets"][0], v["shape"])
    return {k: where[k] for k in wm}

a, b = index(a_dir), index(b_dir)
keys = list(a)
def nbytes(s):
    n = 2
    for d in s: n *= d
    return n
shards, size = [[]], 0
for k in keys:
    if shards[-1] and size + nbytes(a[k][2]) > shard_size:
        shards.append([]); size = 0
    shards[-1].append(k); size += nbytes(a[k][2])
tmp = out_dir + ".tmp"
os.makedirs(tmp)
fds, jobs, wm = {}, [], {}
for i, part in enumerate(shards):
    name = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
    header, pos = {"__metadata__": {"format": "pt"}}, 0
    for k in part:
        header[k] = {"dtype": "BF16", "shape": a[k][2], "data_offsets": [pos, pos + nbytes(a[k][2])]}
        wm[k] = name
        pos += nbytes(a[k][2])
    raw = json.dumps(header).encode(); raw += b" " * (-len(raw) % 8)
    fd = os.open(os.path.join(tmp, name), os.O_WRONLY | os.O_CREAT, 0o644)
    os.write(fd, len(raw).to_bytes(8, "little") + raw)
    os.ftruncate(fd, 8 + len(raw) + pos)
    fds[name] = fd
    for k in part:
        n = nbytes(a[k][2]) // 2
        base = 8 + len(raw) + header[k]["data_offsets"][0]
        for lo in range(0, n, SLICE):
            jobs.append((k, name, base, lo, min(n, lo + SLICE)))
in_fds = {}
lock = threading.Lock()
def fd_of(path):
    with lock:
        if path not in in_fds: in_fds[path] = os.open(path, os.O_RDONLY)
        return in_fds[path]
def read(src, k, lo, hi):
    path, off, _ = src[k]
    buf = bytearray(2 * (hi - lo))
    os.preadv(fd_of(path), [buf], off + 2 * lo)
    return torch.frombuffer(buf, dtype=torch.bfloat16)
def work(job):
    k, name, base, lo, hi = job
    x = read(a, k, lo, hi).float(); y = read(b, k, lo, hi).float()
    out = (x * (1 - alpha) + y * alpha).to(torch.bfloat16)
    os.pwrite(fds[name], out.view(torch.uint8).numpy().tobytes(), base + 2 * lo)
with ThreadPoolExecutor(threads) as pool:
    for _ in pool.map(work, jobs, chunksize=4): pass
for fd in fds.values(): os.close(fd)
if len(shards) > 1:
    json.dump({"metadata": {"total_size": sum(nbytes(a[k][2]) for k in keys)}, "weight_map": wm},
              open(os.path.join(tmp, "model.safetensors.index.json"), "w"))
shutil.copyfile(os.path.join(a_dir, "config.json"), os.path.join(tmp, "config.json"))
os.rename(tmp, out_dir)
'''


def run_child(cmd: list[str], cwd: str, env: dict) -> tuple[float, int, str]:
    with tempfile.TemporaryFile() as fo:
        t = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=fo, stderr=subprocess.STDOUT, cwd=cwd, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t
        fo.seek(0)
        out = fo.read().decode(errors="replace")
    if status != 0:
        raise SystemExit(f"{cmd[:3]} failed:\n{out[-3000:]}")
    return wall, usage.ru_maxrss * 1024, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", choices=sorted(SHAPES), default="1b")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--shard-size", default="1GB", help="input and output shards (e.g. 1GB)")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--dir", default=None, help="work folder (default: a temporary one)")
    args = ap.parse_args()
    sys.path.insert(0, os.path.dirname(HERE))
    from mechalang.units import parse_size

    shard = parse_size(args.shard_size)
    work = args.dir or tempfile.mkdtemp(prefix="mecha-bench-shards-")
    os.makedirs(work, exist_ok=True)
    size = 0
    for name in ("a", "b"):
        if os.path.exists(os.path.join(work, name)):
            shutil.rmtree(os.path.join(work, name))
        size = write_sparse_folder(os.path.join(work, name), args.shape, shard)
    with open(os.path.join(work, "r.mecha"), "w") as f:
        f.write(f'let a = model("a")\nlet b = model("b")\n'
                f'export weighted_sum(a, b, alpha=0.5) to "out/" as hf(shard_size="{shard}")\n')
    with open(os.path.join(work, "baseline.py"), "w") as f:
        f.write(BASELINE)
    env = dict(os.environ, MECHA_FSYNC="0", PYTHONPATH=os.path.dirname(HERE))
    mecha = [sys.executable, "-m", "mechalang", "run", "r.mecha", "--threads", str(args.threads)]
    base = [sys.executable, "baseline.py", "a", "b", "out", "0.5", str(shard), str(args.threads)]
    print(f"shape {args.shape}: 2 × {size / 1e9:.2f} GB bf16 (sparse), shards ≤ {args.shard_size}, "
          f"{args.threads} threads, {args.rounds} rounds")
    times: dict[str, list[float]] = {"mecha": [], "baseline": []}
    rss: dict[str, int] = {"mecha": 0, "baseline": 0}
    for r in range(args.rounds):
        for side, cmd in (("mecha", mecha), ("baseline", base)) if r % 2 == 0 else \
                (("baseline", base), ("mecha", mecha)):
            shutil.rmtree(os.path.join(work, "out"), ignore_errors=True)
            wall, peak, _ = run_child(cmd, work, env)
            times[side].append(wall)
            rss[side] = max(rss[side], peak)
            print(f"  round {r + 1} {side:8s} {wall:7.1f} s  peak RSS {peak / 2**30:.2f} GiB", flush=True)
    shutil.rmtree(os.path.join(work, "out"), ignore_errors=True)
    m, b = statistics.median(times["mecha"]), statistics.median(times["baseline"])
    print(f"median: mecha {m:.1f} s, baseline {b:.1f} s, ratio {m / b:.2f}; "
          f"peak RSS mecha {rss['mecha'] / 2**30:.2f} GiB, baseline {rss['baseline'] / 2**30:.2f} GiB")
    if args.dir is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
