"""Run one merge through mechalang's executor directly, with a key plan built here by hand (no
recipe, no front end): the `--engine-only` side of bench_merge.py.

    python bench/engine_run.py weighted_sum --alpha 0.3 -o out.safetensors a.safetensors b.safetensors

The plan is what lowering a recipe like `export weighted_sum(a, b, alpha=0.3) to "out"` gives:
for every key of the first input, a Read from each input and one Op of the registered method;
non-float keys are read from the first input unchanged. Prints the RunStats as JSON on stdout.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time

T0 = time.perf_counter()


def build_plan(method: str, inputs: list[str], output: str, alpha: float | None):
    from mechalang.archs.header import read_header
    from mechalang.dtypes import FLOAT_DTYPES
    from mechalang.runtime.plan import InputFile, Op, OutputPlan, Plan, Read, layout

    heads = [read_header(p) for p in inputs]
    files = tuple(InputFile(p, h.data_start, h.size, os.path.basename(p)) for p, h in zip(inputs, heads))
    hypers = () if alpha is None else (("alpha", alpha),)
    entries = []
    for key, e in heads[0].tensors.items():
        reads = [Read(i, key, h.tensors[key].dtype, tuple(h.tensors[key].shape), h.tensors[key].begin,
                      h.tensors[key].end) for i, h in enumerate(heads)]
        expr = Op(method, tuple(reads), hypers) if e.dtype in FLOAT_DTYPES else reads[0]
        entries.append((key, expr, e.dtype, tuple(e.shape)))
    return Plan(files, (OutputPlan(output, layout(entries), (("bench", method),)),))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("method")
    ap.add_argument("inputs", nargs="+")
    ap.add_argument("-o", "--output", required=True)
    ap.add_argument("--alpha", type=float, default=None)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--no-fsync", action="store_true")
    ap.add_argument("--elementwise", action="store_true",
                    help="declare the method element-wise (sliced evaluation), as if the "
                         "registry said so")
    args = ap.parse_args(argv)

    from mechalang.methods.registry import REGISTRY
    from mechalang.runtime.executor import execute

    import_s = time.perf_counter() - T0
    spec = REGISTRY.get(args.method)
    if spec is None:
        print(f"no method {args.method} in the registry", file=sys.stderr)
        return 2
    if args.elementwise:
        REGISTRY.register(dataclasses.replace(spec, elementwise=True), replace=True)
    plan = build_plan(args.method, args.inputs, args.output, args.alpha)
    stats = execute(plan, threads=args.threads, fsync=not args.no_fsync)
    out = dataclasses.asdict(stats)
    out["import_s"] = import_s
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
