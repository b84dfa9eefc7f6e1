"""Benchmark LoRA baking and extraction against hand-written loops (bench/baseline_lora.py).

    python bench/bench_lora.py                  # both cases, 3 alternated rounds each
    python bench/bench_lora.py --cases bake --rounds 5

bake: a rank-128 kohya LoRA for every attention/projection/MLP weight of a full-size SDXL-shaped fp16
checkpoint (6.9 GB; synthetic, real key names and shapes), baked at strength 0.8:
`mecha run` on `base + 0.8 * lora(…, base=base)` vs the hand-written single-pass loop.
extract: a rank-64 LoRA extracted from two full-size SD1.5 fp16 files: `export tuned - base … as
lora(rank=64)` vs a loop calling `torch.linalg.svd` key by key.

Inputs are generated once into bench/models/ (git-ignored) and read once before the rounds (page
cache). Each side runs in its own process; reported: median wall time, the ratio, peak RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
MODELS = os.path.join(HERE, "models")
RESULTS = os.path.join(HERE, "results")
sys.path.insert(0, HERE)
from bench_merge import run_child, warm  # noqa: E402
from make_models import model_path  # noqa: E402

TARGETS = ("*attn*", "*proj*", "*.ff.*", "*mlp*")


def ensure_inputs(case: str) -> list[str]:
    from mechalang.synth import make_lora, make_model

    os.makedirs(MODELS, exist_ok=True)
    if case == "bake":
        base = model_path("sdxl", 0)
        if not os.path.exists(base):
            print(f"writing {base} (full-size SDXL, fp16) ...", flush=True)
            make_model("sdxl", base, dim_cap=None, dtype="float16", optional=False, seed=0)
        lora = os.path.join(MODELS, "sdxl_lora_r128.safetensors")
        mapping = os.path.join(MODELS, "sdxl_lora_r128.map.json")
        if not os.path.exists(lora):
            print(f"writing {lora} (rank 128) ...", flush=True)
            make_lora(base, lora, rank=128, targets=TARGETS, seed=1)
        if not os.path.exists(mapping):
            # The baseline's naming table (what a user of one architecture carries): checkpoint key
            # -> [(LoRA module, rows of a fused weight or null)].
            from mechalang.archs.header import read_header
            from mechalang.archs.keymap import module_pieces

            shapes = {k: tuple(m.shape) for k, m in read_header(base).tensors.items()}
            lora_names = set(read_header(lora).tensors)
            table = {}
            for key in shapes:
                pieces = [(m, rows) for m, rows in module_pieces("sdxl", key, "kohya", shapes)
                          if m + ".lora_up.weight" in lora_names]
                if pieces:
                    table[key] = pieces
            with open(mapping, "w") as f:
                json.dump(table, f)
        return [base, lora, mapping]
    paths = []
    for i in range(2):
        p = model_path("sd1", i)
        if not os.path.exists(p):
            print(f"writing {p} (full-size SD1.5, fp16) ...", flush=True)
            make_model("sd1", p, dim_cap=None, dtype="float16", optional=False, seed=i)
        paths.append(p)
    return paths


def commands(case: str, inputs: list[str]) -> tuple[list[str], list[str], list[str]]:
    mecha = shutil.which("mecha") or "mecha"
    out_m = os.path.join(MODELS, f"out_{case}_mecha.safetensors")
    out_b = os.path.join(MODELS, f"out_{case}_baseline.safetensors")
    recipe = os.path.join(MODELS, f"bench_{case}.mecha")
    if case == "bake":
        base, lora, mapping = inputs
        text = (f'let base = model("{base}")\n'
                f'export base + 0.8 * lora("{lora}", base=base) to "{out_m}"\n')
        base_cmd = [sys.executable, "baseline_lora.py", "bake", base, lora, mapping, "-o", out_b, "--strength", "0.8"]
    else:
        base, tuned = inputs
        text = f'export model("{tuned}") - model("{base}") to "{out_m}" as lora(rank=64)\n'
        base_cmd = [sys.executable, "baseline_lora.py", "extract", tuned, base, "-o", out_b, "--rank", "64"]
    with open(recipe, "w") as f:
        f.write(text)
    return [mecha, "run", recipe, "--overwrite"], base_cmd, [out_m, out_b]


def bench_case(case: str, rounds: int) -> dict:
    inputs = ensure_inputs(case)
    mecha_cmd, base_cmd, outs = commands(case, inputs)
    warm([p for p in inputs if p.endswith(".safetensors")])
    print(f"\n== {case}", flush=True)
    rows: dict[str, list] = {"mecha": [], "baseline": []}
    for r in range(rounds):
        for side, cmd in (("mecha", mecha_cmd), ("baseline", base_cmd)):
            for p in outs:
                if os.path.exists(p):
                    os.unlink(p)
            res = run_child(cmd)
            rows[side].append(res)
            print(f"  round {r + 1} {side:8s} {res['wall']:7.2f} s  peak RSS {res['rss'] / 2**20:7.0f} MiB", flush=True)
    for p in outs:
        if os.path.exists(p):
            os.unlink(p)
    med = {s: statistics.median(x["wall"] for x in rows[s]) for s in rows}
    rss = {s: max(x["rss"] for x in rows[s]) for s in rows}
    summary = {"case": case, "rounds": rounds, "mecha_median_s": med["mecha"], "baseline_median_s": med["baseline"],
               "ratio": med["mecha"] / med["baseline"], "mecha_peak_rss_mib": rss["mecha"] / 2**20,
               "baseline_peak_rss_mib": rss["baseline"] / 2**20,
               "walls": {s: [x["wall"] for x in rows[s]] for s in rows}, "loadavg_after": os.getloadavg()}
    print(f"  median: mecha {med['mecha']:.2f} s, baseline {med['baseline']:.2f} s, ratio {summary['ratio']:.2f}; "
          f"peak RSS mecha {summary['mecha_peak_rss_mib']:.0f} MiB, baseline {summary['baseline_peak_rss_mib']:.0f} MiB",
          flush=True)
    return summary


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", default="bake,extract")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args(argv)
    os.makedirs(RESULTS, exist_ok=True)
    for case in args.cases.split(","):
        summary = bench_case(case, args.rounds)
        with open(os.path.join(RESULTS, f"lora_{case}.json"), "w") as f:
            json.dump(summary, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
