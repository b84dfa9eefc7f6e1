"""TIES and DARE over synthetic Llama-shaped checkpoints: time and peak memory, key by key.

    python bench/bench_sparse.py                       # make the models if absent, then run every method
    python bench/bench_sparse.py --methods ties,dare_ties --threads 2
    python bench/bench_sparse.py --layers 4 --dtype fp32 --dir /tmp/llama_syn
    python bench/bench_sparse.py --linalg                # rotate / truncate_rank on SD-sized tensors

Four models (a base and three fine-tunes) with Llama key names and shapes (hidden 2048,
intermediate 5632, vocabulary 32000, 32 query / 4 key-value heads: TinyLlama's layout; 2 layers by
default, about 307 MB per model in fp16) are written once to `--dir` (git-ignored by default).
The fine-tunes are base + a delta that is partly shared between them and partly their own, so
the sign vote has something to decide.

Each method then runs in its own process (so that its peak RSS is its own), streaming: for each
key, the four tensors are read with seek + readinto (no mmap, so the page cache does not count as
the process's memory), the three task vectors mᵢ − base are formed in float32, the method merges
them, base + δ is cast back to the file dtype, and a checksum is kept. Nothing is written: this
measures the method and the key-by-key pipeline around it. `task_arithmetic` (δ = Σᵢ δᵢ) is the
floor: the same reads and casts with the cheapest possible merge.

Reports per method: wall time, input throughput (MB read per second), the slowest key, and
peak RSS (`resource.getrusage(RUSAGE_SELF).ru_maxrss`), next to the RSS after importing torch.
"""

import argparse
import json
import math
import resource
import struct
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DIR = ROOT / "bench" / "models" / "llama_syn"
NAMES = ["base", "ft0", "ft1", "ft2"]
DTYPES = {"fp16": ("F16", 2), "bf16": ("BF16", 2), "fp32": ("F32", 4)}


def llama_shapes(hidden, intermediate, vocab, layers, heads=32, kv_heads=4):
    head_dim = hidden // heads
    shapes = {"model.embed_tokens.weight": (vocab, hidden)}
    for i in range(layers):
        p = f"model.layers.{i}."
        shapes[p + "input_layernorm.weight"] = (hidden,)
        shapes[p + "self_attn.q_proj.weight"] = (hidden, hidden)
        shapes[p + "self_attn.k_proj.weight"] = (kv_heads * head_dim, hidden)
        shapes[p + "self_attn.v_proj.weight"] = (kv_heads * head_dim, hidden)
        shapes[p + "self_attn.o_proj.weight"] = (hidden, hidden)
        shapes[p + "post_attention_layernorm.weight"] = (hidden,)
        shapes[p + "mlp.gate_proj.weight"] = (intermediate, hidden)
        shapes[p + "mlp.up_proj.weight"] = (intermediate, hidden)
        shapes[p + "mlp.down_proj.weight"] = (hidden, intermediate)
    shapes["model.norm.weight"] = (hidden,)
    return shapes


# ------------------------------------------------------------------------------------------------
# Making the models


def make_models(folder: Path, shapes: dict, dtype: str) -> None:
    import torch
    from safetensors.torch import save_file

    tdtype = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[dtype]
    folder.mkdir(parents=True, exist_ok=True)
    spec = {"shapes": {k: list(v) for k, v in shapes.items()}, "dtype": dtype}
    (folder / "spec.json").write_text(json.dumps(spec))
    for m, name in enumerate(NAMES):
        tensors = {}
        for j, (key, shape) in enumerate(shapes.items()):
            g = torch.Generator().manual_seed(1000 * j)
            base = torch.randn(shape, generator=g) * 0.02
            if len(shape) == 1:
                base += 1.0  # norm weights
            if m > 0:
                shared = torch.randn(shape, generator=torch.Generator().manual_seed(1000 * j + 1))
                own = torch.randn(shape, generator=torch.Generator().manual_seed(1000 * j + 1 + m))
                base += 0.002 * (0.6 * shared + 0.8 * own)
            tensors[key] = base.to(tdtype)
        save_file(tensors, str(folder / f"{name}.safetensors"))
        del tensors
        print(f"  wrote {folder / name}.safetensors", file=sys.stderr)


def ensure_models(folder: Path, shapes: dict, dtype: str) -> None:
    spec_file = folder / "spec.json"
    want = {"shapes": {k: list(v) for k, v in shapes.items()}, "dtype": dtype}
    if spec_file.exists() and json.loads(spec_file.read_text()) == want and all(
            (folder / f"{n}.safetensors").exists() for n in NAMES):
        return
    print(f"making 4 synthetic Llama-shaped models in {folder} ...", file=sys.stderr)
    # in a child process: Linux keeps a process's peak RSS across fork + exec, so the parent must
    # stay small for the children's figures to be their own
    subprocess.run([sys.executable, __file__, "--make", json.dumps(want), "--dir", str(folder)], check=True)


# ------------------------------------------------------------------------------------------------
# One method, streamed key by key (runs in a child process)


def read_header(path: Path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
    header.pop("__metadata__", None)
    return 8 + n, header


def run_method(folder: Path, method: str, threads: int, device: str) -> dict:
    import torch

    from mechalang.methods import sparse

    if threads:
        torch.set_num_threads(threads)
    dtypes = {"F16": torch.float16, "BF16": torch.bfloat16, "F32": torch.float32}
    rss_start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    headers = [read_header(folder / f"{n}.safetensors") for n in NAMES]
    files = [open(folder / f"{n}.safetensors", "rb") for n in NAMES]

    def read(i, key):
        start, header = headers[i]
        entry = header[key]
        b, e = entry["data_offsets"]
        buf = bytearray(e - b)
        files[i].seek(start + b)
        files[i].readinto(buf)
        return torch.frombuffer(buf, dtype=dtypes[entry["dtype"]]).reshape(entry["shape"])

    merges = {
        "task_arithmetic": lambda ds, key: sum(ds[1:], ds[0].clone()),
        "ties": lambda ds, key: sparse.ties(*ds, density=0.2),
        "dare_ties": lambda ds, key: sparse.dare_ties(*ds, density=0.5, seed=0, key=key),
        "dare_linear": lambda ds, key: sparse.dare_linear(*ds, density=0.5, seed=0, key=key),
        "della": lambda ds, key: sparse.della(*ds, density=0.5, epsilon=0.15, seed=0, key=key),
        "breadcrumbs_ties": lambda ds, key: sparse.breadcrumbs_ties(*ds, density=0.9, gamma=0.01),
    }
    merge = merges[method]
    keys = list(headers[0][1])
    bytes_read = 0
    checksum = 0.0
    slowest = (0.0, "")
    t0 = time.perf_counter()
    for key in keys:
        k0 = time.perf_counter()
        raw = [read(i, key) for i in range(len(NAMES))]
        bytes_read += sum(t.numel() * t.element_size() for t in raw)
        base = raw[0].to(device=device, dtype=torch.float32)
        ds = [r.to(device=device, dtype=torch.float32) - base for r in raw[1:]]
        del raw
        out = (base + merge(ds, key)).to(torch.float16)
        del ds, base
        checksum += float(out.float().sum())
        del out
        dt = time.perf_counter() - k0
        if dt > slowest[0]:
            slowest = (dt, key)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    wall = time.perf_counter() - t0
    for f in files:
        f.close()
    return {"method": method, "wall_s": wall, "mb_read": bytes_read / 1e6, "mb_per_s": bytes_read / 1e6 / wall,
            "slowest_key": slowest[1], "slowest_key_s": slowest[0], "keys": len(keys),
            "rss_after_import_mb": rss_start,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "threads": torch.get_num_threads(), "checksum": checksum}


# ------------------------------------------------------------------------------------------------
# --linalg: rotate and truncate_rank on SD-sized tensors


def run_linalg(threads: int) -> None:
    import torch

    from mechalang.methods import linalg

    if threads:
        torch.set_num_threads(threads)
    g = torch.Generator().manual_seed(0)
    cases = [
        ("rotate", (49408, 768), dict(alpha=1.0)),  # SD1.5 token embedding
        ("rotate", (49408, 768), dict(alpha=0.5, beta=0.1)),
        ("rotate", (1280, 1280, 3, 3), dict(alpha=0.5)),  # SD1.5's largest conv
        ("rotate", (1280, 1280), dict(alpha=0.5)),
        ("rotate", (1280, 5120), dict(alpha=0.5)),  # ff.net.2: fewer rows than columns
        ("truncate_rank", (49408, 768), dict(rank=64)),
        ("truncate_rank", (1280, 1280, 3, 3), dict(rank=128)),
        ("truncate_rank", (1280, 1280, 3, 3), dict(rank_ratio=0.5)),
        ("truncate_rank", (4096, 11008), dict(rank=64)),  # Llama-7B MLP
    ]
    print(f"{'method':<15}{'shape':<22}{'hypers':<28}{'s':>7}")
    for name, shape, hypers in cases:
        a = torch.randn(shape, generator=g)
        args = (a,) if name == "truncate_rank" else (a, a + 0.1 * torch.randn(shape, generator=g))
        t0 = time.perf_counter()
        getattr(linalg, name)(*args, **hypers)
        dt = time.perf_counter() - t0
        print(f"{name:<15}{'x'.join(map(str, shape)):<22}{json.dumps(hypers):<28}{dt:>7.2f}")


# ------------------------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dir", type=Path, default=DEFAULT_DIR)
    ap.add_argument("--hidden", type=int, default=2048)
    ap.add_argument("--intermediate", type=int, default=5632)
    ap.add_argument("--vocab", type=int, default=32000)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--dtype", choices=sorted(DTYPES), default="fp16")
    ap.add_argument("--methods", default="task_arithmetic,ties,dare_ties,dare_linear")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--linalg", action="store_true", help="time rotate and truncate_rank on SD-sized tensors instead")
    ap.add_argument("--run", help=argparse.SUPPRESS)  # child mode: one method
    ap.add_argument("--make", help=argparse.SUPPRESS)  # child mode: write the models
    args = ap.parse_args()

    if args.make:
        want = json.loads(args.make)
        make_models(args.dir, {k: tuple(v) for k, v in want["shapes"].items()}, want["dtype"])
        return
    if args.linalg:
        run_linalg(args.threads)
        return
    if args.run:
        print(json.dumps(run_method(args.dir, args.run, args.threads, args.device)))
        return

    shapes = llama_shapes(args.hidden, args.intermediate, args.vocab, args.layers)
    ensure_models(args.dir, shapes, args.dtype)
    size_mb = sum((args.dir / f"{n}.safetensors").stat().st_size for n in NAMES) / 1e6
    params = sum(math.prod(s) for s in shapes.values())
    print(f"{len(shapes)} keys, {params / 1e6:.1f} M parameters per model, 4 models, {size_mb:.0f} MB in "
          f"{args.dtype}; largest key {max(shapes, key=lambda k: math.prod(shapes[k]))}")
    # warm the page cache so that every method starts alike
    for n in NAMES:
        with open(args.dir / f"{n}.safetensors", "rb") as f:
            while f.read(1 << 24):
                pass
    results = []
    print(f"{'method':<18}{'wall s':>9}{'MB/s':>9}{'slowest key':>44}{'s':>7}{'peak RSS MB':>13}{'(import)':>10}")
    for method in args.methods.split(","):
        cmd = [sys.executable, __file__, "--dir", str(args.dir), "--run", method, "--threads", str(args.threads),
               "--device", args.device]
        r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        if r.returncode != 0:
            print(f"{method}: failed\n{r.stderr}", file=sys.stderr)
            continue
        res = json.loads(r.stdout.strip().splitlines()[-1])
        results.append(res)
        print(f"{method:<18}{res['wall_s']:>9.2f}{res['mb_per_s']:>9.0f}{res['slowest_key']:>44}"
              f"{res['slowest_key_s']:>7.2f}{res['peak_rss_mb']:>13.0f}{res['rss_after_import_mb']:>10.0f}")
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_sparse.json").write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                                       "results": results}, indent=2))


if __name__ == "__main__":
    main()
