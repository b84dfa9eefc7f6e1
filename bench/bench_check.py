"""How long `mecha check` takes on a recipe merging three full-size SD1.5 checkpoints.

`mecha check` reads only headers, so the inputs are full-size SD1.5 fp16 files (2.1 GB each, the
real key names, shapes and offsets from the inventory) written sparse: the header is real, the
data section is a hole. That is exactly what check sees of a real file.

Timed, in alternation, each as a fresh process (interpreter start included):
  mecha    `mecha check bench/models/check/recipe.mecha`
  baseline a hand-written script reading the three headers with `json` and checking that every
           key's shape agrees (the least any checker must do)
Reports medians, the ratio, and whether torch was imported.

    python bench/bench_check.py [--rounds 15]
    python bench/bench_check.py --deep [--rounds 5]    # a chain of 10,000 merges of those files
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).parent
INVENTORIES = HERE.parent / "mechalang" / "stdlib" / "architectures"  # the bundled reference inventories
SIZES = {"float32": 4, "float16": 2, "int64": 8}
ST = {"float32": "F32", "float16": "F16", "int64": "I64"}

RECIPE = """\
let base = model("base.safetensors")
let tuned = model("tuned.safetensors")
let other = model("other.safetensors")

let w = {default: 0.5, IN00..IN05: 0.3, "OUT*": 0.7, attn2: 0.6, "OUT*" & attn2: 0.9, clip_l: 0.0}

export add_difference(other, tuned, base, alpha=w) to "out.safetensors" as fp16
"""

BASELINE = r"""
import json, struct, sys
headers = []
for p in sys.argv[1:]:
    with open(p, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        headers.append(json.loads(f.read(n)))
first = headers[0]
for h in headers[1:]:
    for k, v in h.items():
        if k != "__metadata__" and k in first and first[k]["shape"] != v["shape"]:
            sys.exit(1)
print("ok")
"""


def inventory_sd1() -> dict:
    inv = json.loads((INVENTORIES / "sd1.json").read_text())
    keys = {}
    for comp in inv["components"].values():
        for k, spec in comp.items():
            if spec.get("optional") and "ema" in k:
                continue
            keys[k] = spec
    return keys


def write_sparse(path: Path, keys: dict) -> None:
    header = {}
    pos = 0
    for k, spec in keys.items():
        dtype = "float16" if spec["dtype"] == "float32" else spec["dtype"]
        n = SIZES[dtype]
        for d in spec["shape"]:
            n *= d
        header[k] = {"dtype": ST[dtype], "shape": spec["shape"], "data_offsets": [pos, pos + n]}
        pos += n
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as f:
        f.write(len(raw).to_bytes(8, "little") + raw)
        f.truncate(8 + len(raw) + pos)


def timed(cmd: list[str], cwd: Path) -> tuple[float, str]:
    t = time.perf_counter()
    r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    dt = time.perf_counter() - t
    if r.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{r.stdout}{r.stderr}")
    return dt, r.stdout


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--deep", action="store_true",
                    help="check a recipe of 10,000 chained merges of the same files instead")
    args = ap.parse_args()
    folder = HERE / "models" / "check"
    folder.mkdir(parents=True, exist_ok=True)
    keys = inventory_sd1()
    for name in ("base", "tuned", "other"):
        p = folder / f"{name}.safetensors"
        if not p.exists():
            write_sparse(p, keys)
    (folder / "recipe.mecha").write_text(RECIPE)
    if args.deep:
        deep(folder, args.rounds)
        return
    size = (folder / "base.safetensors").stat().st_size
    mecha = [sys.executable, "-m", "mechalang.cli", "check", "recipe.mecha"]
    baseline = [sys.executable, "-c", BASELINE] + [f"{n}.safetensors" for n in ("base", "tuned", "other")]
    probe = [sys.executable, "-c", "import sys; from mechalang import cli\ntry: cli.app(['check','recipe.mecha'])\n"
             "except SystemExit: pass\nprint('torch imported' if 'torch' in sys.modules else 'torch not imported')"]
    timed(mecha, folder)  # warm the page cache and .pyc files
    m_times, b_times = [], []
    for _ in range(args.rounds):
        m_times.append(timed(mecha, folder)[0])
        b_times.append(timed(baseline, folder)[0])
    m, b = statistics.median(m_times), statistics.median(b_times)
    print(f"inputs: 3 × SD1.5 fp16, {size / 1e9:.2f} GB each, {len(keys)} keys")
    print(f"mecha check      median {m * 1000:.0f} ms (min {min(m_times) * 1000:.0f}, max {max(m_times) * 1000:.0f})")
    print(f"baseline script  median {b * 1000:.0f} ms")
    print(f"ratio            {m / b:.2f}×")
    print(timed(probe, folder)[1].strip().splitlines()[-1])


def deep(folder: Path, rounds: int) -> None:
    """`mecha check` of 10,000 chained merges (one `let` each) of full-size SD1.5 headers."""
    lines = ['let b = model("tuned.safetensors")', 'let v0 = model("base.safetensors")']
    lines += [f"let v{i} = weighted_sum(v{i - 1}, b, alpha=0.01)" for i in range(1, 10_001)]
    lines.append('export v10000 to "deep.safetensors"')
    (folder / "deep.mecha").write_text("\n".join(lines) + "\n")
    cmd = [sys.executable, "-m", "mechalang.cli", "check", "deep.mecha"]
    timed(cmd, folder)
    times = [timed(cmd, folder)[0] for _ in range(rounds)]
    print(f"mecha check of 10,000 chained merges (SD1.5 headers): median {statistics.median(times):.2f} s "
          f"(min {min(times):.2f}, max {max(times):.2f}, {rounds} rounds)")


if __name__ == "__main__":
    main()
