"""The merge methods against mergekit, on the same models and the same configuration.

    python bench/bench_methods.py                                   # every method below, 1 round
    python bench/bench_methods.py --methods sce,karcher --rounds 3
    python bench/bench_methods.py --mergekit /path/to/venv/bin/mergekit-yaml
    python bench/bench_methods.py --profile sce                      # where mecha's time goes
    python bench/bench_methods.py --phases --methods slerp,della      # mecha's run phase by phase

Three Llama-shaped bf16 checkpoints (a base and two fine-tunes: 8 layers, hidden 1024, 16 query / 4
key-value heads, intermediate 2816, vocabulary 32000, untied head: about 311 MB each) are written
once as Hugging Face folders (`config.json` + `model.safetensors`) into `--dir` (git-ignored by
default). The fine-tunes are the base plus a delta partly shared between them and partly their own.

For each method the same merge is written twice, as a mergekit YAML and as a `.mecha` recipe, and
each tool runs in its own process, alternately, `--rounds` times: `mergekit-yaml CONFIG OUT` and
`mecha run RECIPE`. Both compute in float32 and write bfloat16, on the CPU, with the cores the
machine has. Reported: median wall time of each, the ratio mergekit / mecha (how many times faster
mecha is), both peak RSS (`os.wait4`), and how far apart the outputs are: the largest difference in
proportion of its tensor's largest magnitude, and the share of elements more than one bfloat16 step
apart. Deterministic methods agree up to rounding (float32 arithmetic in another order, then
rounded to bfloat16: a value on a rounding boundary can land one step either way); DARE and DELLA
drop entries at random, so their outputs differ by design (each tool has its own generator).

mergekit is optional (an extra of the benchmarks, never of the tests): install it in its own
environment (`python -m venv mk && mk/bin/pip install torch==2.13.0 mergekit`) and pass
`--mergekit mk/bin/mergekit-yaml`; without it only mecha's times are printed. mergekit has no
geometric median: `geometric_median` is timed against `bench/baseline_geometric_median.py`, a plain
torch script (per key: load, Weiszfeld's iterations on the stacked tensors, save).

Both tools run from compiled bytecode, as installed packages do: mechalang is byte-compiled once
before the rounds and PYTHONDONTWRITEBYTECODE is removed from the children's environment (with it,
every mecha run would compile its ~100 modules again: about 0.4 s).

`--phases` runs mecha's side in-process in a child that times each phase: Python's start, importing
mechalang's front end, importing torch, loading and planning the recipe, executing it (read, compute
and write overlap there; the time to the first key written is shown), and ending the process as
`mecha` does.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DIR = ROOT / "bench" / "models" / "llama_methods"
NAMES = ("base", "ft0", "ft1")

# method -> (mergekit YAML body after the models, the mecha expression); `{base}`, `{ft0}`, `{ft1}`
# are the models. `random`: the outputs are not comparable value by value.
METHODS: dict[str, dict] = {
    "slerp": dict(
        mergekit="merge_method: slerp\nbase_model: {base}\nmodels:\n  - model: {base}\n  - model: {ft0}\n"
                 "parameters:\n  t: 0.3\n",
        mecha="slerp(base, ft0, alpha=0.3)"),
    "nuslerp": dict(
        mergekit="merge_method: nuslerp\nmodels:\n  - model: {ft0}\n    parameters:\n      weight: 1.0\n"
                 "  - model: {ft1}\n    parameters:\n      weight: 3.0\n",
        mecha="nuslerp(ft0, ft1, weight_a=1.0, weight_b=3.0)"),
    "multislerp": dict(
        mergekit="merge_method: multislerp\nmodels:\n  - model: {base}\n    parameters:\n      weight: 1.0\n"
                 "  - model: {ft0}\n    parameters:\n      weight: 1.0\n"
                 "  - model: {ft1}\n    parameters:\n      weight: 1.0\n",
        mecha="multislerp(base, ft0, ft1)"),
    "karcher": dict(
        mergekit="merge_method: karcher\nmodels:\n  - model: {base}\n  - model: {ft0}\n  - model: {ft1}\n"
                 "parameters:\n  max_iter: 10\n  tol: 1.0e-5\n",
        mecha="karcher_mean(base, ft0, ft1, max_iter=10, tol=1e-5)"),
    "sce": dict(
        mergekit="merge_method: sce\nbase_model: {base}\nmodels:\n  - model: {ft0}\n  - model: {ft1}\n"
                 "parameters:\n  select_topk: 0.5\n",
        mecha="base + sce(ft0 - base, ft1 - base, select_topk=0.5)"),
    "ties": dict(
        mergekit="merge_method: ties\nbase_model: {base}\nmodels:\n"
                 "  - model: {ft0}\n    parameters:\n      weight: 1.0\n      density: 0.2\n"
                 "  - model: {ft1}\n    parameters:\n      weight: 1.0\n      density: 0.2\n"
                 "parameters:\n  normalize: true\n",
        mecha="base + ties(ft0 - base, ft1 - base, density=0.2, normalize=true)"),
    "dare_ties": dict(
        mergekit="merge_method: dare_ties\nbase_model: {base}\nmodels:\n"
                 "  - model: {ft0}\n    parameters:\n      weight: 1.0\n      density: 0.5\n"
                 "  - model: {ft1}\n    parameters:\n      weight: 1.0\n      density: 0.5\n"
                 "parameters:\n  normalize: false\n",
        mecha="base + dare_ties(ft0 - base, ft1 - base, density=0.5, normalize=false)", random=True),
    "della": dict(
        mergekit="merge_method: della\nbase_model: {base}\nmodels:\n"
                 "  - model: {ft0}\n    parameters:\n      weight: 1.0\n      density: 0.5\n      epsilon: 0.15\n"
                 "  - model: {ft1}\n    parameters:\n      weight: 1.0\n      density: 0.5\n      epsilon: 0.15\n"
                 "parameters:\n  normalize: true\n  lambda: 1.0\n",
        mecha="base + della(ft0 - base, ft1 - base, density=0.5, epsilon=0.15, normalize=true)", random=True),
    "model_stock": dict(
        mergekit="merge_method: model_stock\nbase_model: {base}\nmodels:\n  - model: {ft0}\n  - model: {ft1}\n",
        mecha="model_stock(base, ft0, ft1)"),
    # mergekit has no geometric median: the reference is a plain-torch script (see its docstring)
    "geometric_median": dict(baseline="baseline_geometric_median.py", mecha="geometric_median(base, ft0, ft1)"),
}


def llama_config(layers: int, hidden: int, intermediate: int, vocab: int, heads: int, kv_heads: int) -> dict:
    return {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": hidden,
        "intermediate_size": intermediate, "num_hidden_layers": layers, "num_attention_heads": heads,
        "num_key_value_heads": kv_heads, "vocab_size": vocab, "max_position_embeddings": 2048,
        "rms_norm_eps": 1e-5, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
        "hidden_act": "silu", "rope_theta": 10000.0,
    }


def llama_shapes(cfg: dict) -> dict[str, tuple[int, ...]]:
    h, i, v = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    kv = cfg["num_key_value_heads"] * (h // cfg["num_attention_heads"])
    shapes: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (v, h)}
    for n in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{n}."
        shapes.update({
            p + "input_layernorm.weight": (h,), p + "self_attn.q_proj.weight": (h, h),
            p + "self_attn.k_proj.weight": (kv, h), p + "self_attn.v_proj.weight": (kv, h),
            p + "self_attn.o_proj.weight": (h, h), p + "post_attention_layernorm.weight": (h,),
            p + "mlp.gate_proj.weight": (i, h), p + "mlp.up_proj.weight": (i, h),
            p + "mlp.down_proj.weight": (h, i),
        })
    shapes["model.norm.weight"] = (h,)
    shapes["lm_head.weight"] = (v, h)
    return shapes


def make_models(folder: Path, cfg: dict) -> None:
    import torch
    from safetensors.torch import save_file

    shapes = llama_shapes(cfg)
    for m, name in enumerate(NAMES):
        out = folder / name
        out.mkdir(parents=True, exist_ok=True)
        tensors = {}
        for j, (key, shape) in enumerate(shapes.items()):
            t = torch.randn(shape, generator=torch.Generator().manual_seed(1000 * j)) * 0.02
            if len(shape) == 1:
                t += 1.0
            if m > 0:
                shared = torch.randn(shape, generator=torch.Generator().manual_seed(1000 * j + 1))
                own = torch.randn(shape, generator=torch.Generator().manual_seed(1000 * j + 1 + m))
                t += 0.002 * (0.6 * shared + 0.8 * own)
            tensors[key] = t.to(torch.bfloat16)
        save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
        (out / "config.json").write_text(json.dumps(cfg, indent=2))
        print(f"  wrote {out}", file=sys.stderr)


def ensure_models(folder: Path, cfg: dict) -> None:
    spec = folder / "spec.json"
    if spec.exists() and json.loads(spec.read_text()) == cfg and all(
            (folder / n / "model.safetensors").exists() for n in NAMES):
        return
    print(f"making {len(NAMES)} Llama-shaped bf16 models in {folder} ...", file=sys.stderr)
    # a child process, so that this one stays small and the children's peak RSS is their own
    subprocess.run([sys.executable, __file__, "--make", json.dumps(cfg), "--dir", str(folder)], check=True)
    spec.write_text(json.dumps(cfg))


def run(cmd: list[str], env: dict | None = None) -> tuple[float, int]:
    """(wall seconds, peak RSS in MiB) of one command; its output shown only when it fails."""
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    out = p.stdout.read()
    _, status, usage = os.wait4(p.pid, 0)
    elapsed = time.perf_counter() - t0
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode != 0:
        sys.stderr.write(out.decode(errors="replace")[-4000:])
        raise SystemExit(f"{cmd[0]} failed with exit code {p.returncode}")
    return elapsed, usage.ru_maxrss // 1024


def output_file(folder: Path) -> Path:
    files = sorted(folder.glob("*.safetensors"))
    if len(files) != 1:
        raise SystemExit(f"expected one safetensors file in {folder}, found {[f.name for f in files]}")
    return files[0]


def compare(a: Path, b: Path) -> tuple[float, float]:
    """`compare_here` in a child process: this one stays small, because a child's peak RSS
    (`os.wait4`) counts its parent's memory at the fork, and loading two outputs here would
    inflate every later measurement by their size."""
    out = subprocess.run([sys.executable, __file__, "--compare", str(a), str(b)], check=True,
                         stdout=subprocess.PIPE, text=True).stdout
    worst, share = json.loads(out.strip().splitlines()[-1])
    return worst, share


def compare_here(a: Path, b: Path) -> tuple[float, float]:
    """(the largest difference relative to its tensor's largest magnitude, the share of elements
    more than one bfloat16 step apart at their own magnitude)."""
    import torch
    from safetensors import safe_open

    worst, far, total = 0.0, 0, 0
    with safe_open(str(a), "pt") as fa, safe_open(str(b), "pt") as fb:
        if set(fa.keys()) != set(fb.keys()):
            raise SystemExit(f"the outputs have different keys: {sorted(set(fa.keys()) ^ set(fb.keys()))[:5]}")
        for k in fa.keys():
            x, y = fa.get_tensor(k).float(), fb.get_tensor(k).float()
            d = (x - y).abs()
            worst = max(worst, float(d.max()) / max(float(x.abs().max()), 1e-30))
            # one bf16 step at max(|x|, |y|): 2^(exponent − 8) with frexp's mantissa in [0.5, 1)
            step = torch.ldexp(torch.ones_like(x), torch.frexp(torch.maximum(x.abs(), y.abs()))[1] - 8)
            far += int((d > step).sum())
            total += x.numel()
    return worst, far / max(total, 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--dir", type=Path, default=DEFAULT_DIR)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--hidden", type=int, default=1024)
    ap.add_argument("--mergekit", default=shutil.which("mergekit-yaml"),
                    help="mergekit-yaml to compare with (default: the one on PATH, if any)")
    ap.add_argument("--profile", metavar="METHOD", help="profile mecha's run of one method instead")
    ap.add_argument("--phases", action="store_true", help="time mecha's run phase by phase instead")
    ap.add_argument("--make-only", action="store_true", help="write the models if missing, run nothing")
    ap.add_argument("--make", help=argparse.SUPPRESS)
    ap.add_argument("--compare", nargs=2, type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--phase-child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.compare:
        print(json.dumps(compare_here(*args.compare)))
        return
    if args.make:
        make_models(args.dir, json.loads(args.make))
        return
    if args.phase_child:
        phase_child(args.phase_child)
        return
    cfg = llama_config(args.layers, args.hidden, int(args.hidden * 2.75), 32000, 16, 4)
    ensure_models(args.dir, cfg)
    if args.make_only:
        return
    work = args.dir / "runs"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    models = {n: str(args.dir / n) for n in NAMES}
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise SystemExit(f"unknown method(s) {unknown}; known: {', '.join(METHODS)}")
    mecha = [sys.executable, "-m", "mechalang"]
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "mechalang")], env=env, check=True)
    rows = []
    for method in methods:
        spec = METHODS[method]
        recipe = work / f"{method}.mecha"
        lets = "".join(f'let {n} = model("{models[n]}/model.safetensors")\n' for n in NAMES)
        out_mecha = work / f"{method}_mecha" / "model.safetensors"
        out_mecha.parent.mkdir()
        recipe.write_text(lets + f'export {spec["mecha"]} to "{out_mecha}" as bf16\n')
        if args.profile:
            if args.profile == method:
                subprocess.run([sys.executable, "-m", "cProfile", "-s", "cumulative", "-m", "mechalang", "run",
                                str(recipe), "--overwrite", "--allow-unused"], env=env, check=True)
            continue
        if args.phases:
            for _ in range(args.rounds):
                print(f"{method:16s} " + phases(recipe, env), flush=True)
            continue
        out_mk = work / f"{method}_mergekit"
        if "baseline" in spec:  # a plain-torch reference script instead of mergekit
            other = [sys.executable, str(ROOT / "bench" / spec["baseline"]), str(out_mk / "model.safetensors"),
                     *(f"{models[n]}/model.safetensors" for n in NAMES)]
            reference = spec["baseline"]
        else:
            config = work / f"{method}.yml"
            config.write_text(spec["mergekit"].format(**models) + "dtype: float32\nout_dtype: bfloat16\n")
            other = [args.mergekit, str(config), str(out_mk)] if args.mergekit else None
            reference = "mergekit"
        t_mecha, t_mk, rss_mecha, rss_mk = [], [], 0, 0
        for _ in range(args.rounds):
            t, rss = run([*mecha, "run", str(recipe), "--overwrite", "--allow-unused"], env)
            t_mecha.append(t)
            rss_mecha = max(rss_mecha, rss)
            if other:
                shutil.rmtree(out_mk, ignore_errors=True)
                out_mk.mkdir()
                t, rss = run(other, env if "baseline" in spec else None)
                t_mk.append(t)
                rss_mk = max(rss_mk, rss)
        row = {"method": method, "mecha_s": statistics.median(t_mecha), "mecha_rss_mib": rss_mecha}
        if t_mk:
            rel, share = compare(out_mecha, output_file(out_mk))
            row.update(reference=reference, mergekit_s=statistics.median(t_mk), mergekit_rss_mib=rss_mk,
                       ratio=statistics.median(t_mk) / statistics.median(t_mecha), max_rel=rel,
                       far=share, random=bool(spec.get("random")))
        rows.append(row)
        print(format_row(row), flush=True)
    if args.phases or args.profile:
        return
    results = ROOT / "bench" / "results"
    results.mkdir(exist_ok=True)
    (results / "methods.json").write_text(json.dumps(rows, indent=2))


def phase_child(recipe: str) -> None:
    """Run one recipe in this process and print the time of each phase as JSON (see --phases)."""
    t0 = time.time()
    from mechalang import pipeline
    from mechalang.cli import _exit
    from mechalang.commands.check import load
    t1 = time.time()
    import torch  # noqa: F401
    t2 = time.time()
    program = load(recipe, (), None, (), force=False, allow_unused=True)
    planned = pipeline.plan(program, output=None, precision="fp32", strict=False, hash_inputs=False,
                            shard_size=None)
    t3 = time.time()
    result = pipeline.execute(planned, overwrite=True)
    t4 = time.time()
    if not result.ok:
        raise SystemExit(f"{recipe} failed: {[d.message for d in result.diagnostics]}")
    print(json.dumps(dict(t0=t0, front_end=t1 - t0, torch=t2 - t1, plan=t3 - t2, execute=t4 - t3,
                          first_key=result.stats.first_key_seconds, t_end=t4)), flush=True)
    _exit(0)  # as `mecha` ends its process


def phases(recipe: Path, env: dict) -> str:
    start = time.time()
    p = subprocess.run([sys.executable, __file__, "--phase-child", str(recipe)], env=env,
                       capture_output=True, text=True, check=True)
    end = time.time()
    d = json.loads(p.stdout.strip().splitlines()[-1])
    return (f"wall {end - start:5.2f} s = python start {d['t0'] - start:4.2f} + front end {d['front_end']:4.2f} "
            f"+ import torch {d['torch']:4.2f} + load and plan {d['plan']:4.2f} + execute {d['execute']:5.2f} "
            f"(first key at {d['first_key']:4.2f}) + exit {end - d['t_end']:4.2f}   "
            f"(load average {os.getloadavg()[0]:.1f})")


def format_row(r: dict) -> str:
    text = f"{r['method']:12s} mecha {r['mecha_s']:6.1f} s ({r['mecha_rss_mib']} MiB)"
    if "mergekit_s" in r:
        agree = (f"{100 * r['far']:.1f} % of entries apart (random drops)" if r["random"]
                 else f"max diff {r['max_rel']:.1e} of the tensor's max, {100 * r['far']:.3f} % of entries "
                      f"> 1 bf16 step apart")
        text += (f"   {r.get('reference', 'mergekit')} {r['mergekit_s']:6.1f} s ({r['mergekit_rss_mib']} MiB)   "
                 f"{r['ratio']:.2f}x faster   outputs {agree}")
    return text


if __name__ == "__main__":
    main()
