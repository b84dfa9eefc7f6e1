"""Synthetic models: safetensors files with an architecture's real key names and (scaled-down or
true) shapes, filled with deterministic random values. For tests and benchmarks.

    python -m mechalang.synth sd1 /tmp/sd1_small.safetensors
    python -m mechalang.synth sd1 /tmp/sd1_full.safetensors --full --no-optional  # ~2.1 GB fp16

The header is computed first and tensors are then generated and written one at a time, so a
full-size model never sits in memory. Values depend only on (seed, key name): dropping or adding
keys leaves every other tensor unchanged.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import struct
import sys
import zlib
from typing import Iterable, Mapping

import torch

from .archs.arch import Arch, KeySpec
from .archs.registry import get_arch
from .dtypes import DTYPES, USER_FLOAT_NAMES
from .runtime.reader import byte_view

# The names a caller may ask for (`float16`, `fp16`, `bf16`, ...), from the one dtype table.
_DTYPE_NAMES = {name: getattr(torch, DTYPES[st].torch_name) for name, st in USER_FLOAT_NAMES.items()}
_ST_TO_TORCH = {d.name: getattr(torch, d.torch_name) for d in DTYPES.values()
                if d.supported and hasattr(torch, d.torch_name)}
_TORCH_TO_ST = {v: k for k, v in _ST_TO_TORCH.items()}


def _st_name(dt: torch.dtype) -> str:
    return _TORCH_TO_ST[dt]


def make_model(
    arch: str | Arch,
    path: str | os.PathLike,
    *,
    dim_cap: int | None = 8,
    dtype: str = "float16",
    seed: int = 0,
    drop: Iterable[str] = (),
    extra: Mapping[str, tuple] | None = None,
    scale: float = 1.0,
    layers: int | None = None,
    use_aliases: bool | str = False,
    optional: bool = True,
    metadata: Mapping[str, str] | None = None,
) -> dict[str, tuple[tuple[int, ...], str]]:
    """Write a synthetic model of `arch` to `path` and return its keys as {key: (shape, dtype)}.

    - `dim_cap`: every dimension is capped at this size (None: the true shapes).
    - `dtype`: of floating tensors (`float16`, `bfloat16`, `float32`, `float64`, or `keep` for the
      inventory's own); integer tensors (position_ids, ...) keep their dtype and get sensible values.
    - `drop`: keys (or globs) to leave out; `extra`: {key: shape} of additional floating tensors.
    - `scale`: standard deviation of the values.
    - `layers`: depth of a family (llama, bert, generic); default 2.
    - `use_aliases`: write keys under their first alias (all, or those matching a glob), as older
      files name them.
    - `optional`: include the inventory's optional keys (EMA weights, scheduler buffers,
      position_ids). A full SD1 in fp16 is ~3.9 GB with them and ~2.1 GB without.
    """
    a = get_arch(arch) if isinstance(arch, str) else arch
    if a is None:
        raise ValueError(f"unknown architecture `{arch}`")
    if dtype != "keep" and dtype not in _DTYPE_NAMES:
        raise ValueError(f"unknown dtype `{dtype}` (expected one of: keep, "
                         f"{', '.join(sorted(_DTYPE_NAMES))})")
    if dim_cap is not None and dim_cap < 1:
        raise ValueError("dim_cap must be at least 1")

    specs = _specs(a, dim_cap, layers)
    drops = list(drop)
    plan: list[tuple[str, str, tuple[int, ...], torch.dtype]] = []  # (name, canonical, shape, dt)
    for key, spec in specs.items():
        if any(key == d or fnmatch.fnmatchcase(key, d) for d in drops):
            continue
        if spec.optional and not optional:
            continue
        name = key
        if use_aliases and spec.aliases:
            if use_aliases is True or fnmatch.fnmatchcase(key, str(use_aliases)):
                name = spec.aliases[0]
        shape = tuple(min(d, dim_cap) if dim_cap is not None else d for d in spec.shape)
        plan.append((name, key, shape, _out_dtype(spec.dtype, dtype)))
    for key, shape in (extra or {}).items():
        fdt = _DTYPE_NAMES["float16" if dtype == "keep" else dtype]
        plan.append((key, key, tuple(int(d) for d in shape), fdt))
    names = [p[0] for p in plan]
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise ValueError(f"key `{dup}` would be written twice")

    header: dict = {"__metadata__": {"format": "pt", **(metadata or {})}}
    offset = 0
    for name, _, shape, dt in plan:
        n = 1
        for d in shape:
            n *= d
        nbytes = n * torch.empty((), dtype=dt).element_size()
        header[name] = {"dtype": _st_name(dt), "shape": list(shape),
                        "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    blob = json.dumps(header, separators=(",", ":")).encode("utf-8")
    blob += b" " * (-len(blob) % 8)  # data section 8-byte aligned, as safetensors writes it

    path = os.fspath(path)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        for name, key, shape, dt in plan:
            t = _tensor(key, shape, dt, seed, scale).contiguous()
            if t.numel():
                f.write(byte_view(t))  # no extra copy, and no numpy needed
            del t
    os.replace(tmp, path)
    return {name: (shape, _st_name(dt)) for name, _, shape, dt in plan}


def _out_dtype(st_dtype: str, requested: str) -> torch.dtype:
    dt = _ST_TO_TORCH.get(st_dtype, torch.float32)
    if not dt.is_floating_point or requested == "keep":
        return dt
    return _DTYPE_NAMES[requested]


def _tensor(key: str, shape: tuple[int, ...], dt: torch.dtype, seed: int, scale: float) -> torch.Tensor:
    if not dt.is_floating_point:
        if key.endswith("position_ids") and shape:
            return torch.arange(shape[-1], dtype=dt).expand(shape).contiguous()
        return torch.zeros(shape, dtype=dt)
    g = torch.Generator().manual_seed((seed * 1_000_003 + zlib.crc32(key.encode())) % (2**63))
    t = torch.randn(shape, generator=g, dtype=torch.float32)
    if scale != 1.0:
        t.mul_(scale)
    return t.to(dt)


# ------------------------------------------------------------------------------------------------
# Families: small configurations with real key names


def _specs(a: Arch, dim_cap: int | None, layers: int | None) -> dict[str, KeySpec]:
    if a.inventory is not None:
        return dict(a.inventory)
    n = 2 if layers is None else layers
    if n < 0:
        raise ValueError("layers must be >= 0")
    h = dim_cap if dim_cap is not None else 64
    if a.name == "llama":
        return _llama(n, h)
    if a.name == "bert":
        return _bert(n, h)
    if a.name == "generic":
        return _generic(n, h)
    raise ValueError(f"architecture `{a.name}` has no inventory and no synthetic configuration")


def _f(*shape: int) -> KeySpec:
    return KeySpec(tuple(shape), "F32", False, ())


def _llama(n: int, h: int) -> dict[str, KeySpec]:
    vocab, inter, kv = 4 * h, 2 * h, max(1, h // 2)
    s = {"model.embed_tokens.weight": _f(vocab, h)}
    for i in range(n):
        p = f"model.layers.{i}."
        s[p + "self_attn.q_proj.weight"] = _f(h, h)
        s[p + "self_attn.k_proj.weight"] = _f(kv, h)
        s[p + "self_attn.v_proj.weight"] = _f(kv, h)
        s[p + "self_attn.o_proj.weight"] = _f(h, h)
        s[p + "mlp.gate_proj.weight"] = _f(inter, h)
        s[p + "mlp.up_proj.weight"] = _f(inter, h)
        s[p + "mlp.down_proj.weight"] = _f(h, inter)
        s[p + "input_layernorm.weight"] = _f(h)
        s[p + "post_attention_layernorm.weight"] = _f(h)
    s["model.norm.weight"] = _f(h)
    s["lm_head.weight"] = _f(vocab, h)
    return s


def _bert(n: int, h: int) -> dict[str, KeySpec]:
    vocab, inter, pos = 4 * h, 2 * h, 2 * h
    s = {
        "embeddings.word_embeddings.weight": _f(vocab, h),
        "embeddings.position_embeddings.weight": _f(pos, h),
        "embeddings.token_type_embeddings.weight": _f(2, h),
        "embeddings.LayerNorm.weight": _f(h),
        "embeddings.LayerNorm.bias": _f(h),
        "embeddings.position_ids": KeySpec((1, pos), "I64", False, ()),
    }
    for i in range(n):
        p = f"encoder.layer.{i}."
        for m in ("query", "key", "value"):
            s[p + f"attention.self.{m}.weight"] = _f(h, h)
            s[p + f"attention.self.{m}.bias"] = _f(h)
        s[p + "attention.output.dense.weight"] = _f(h, h)
        s[p + "attention.output.dense.bias"] = _f(h)
        s[p + "attention.output.LayerNorm.weight"] = _f(h)
        s[p + "attention.output.LayerNorm.bias"] = _f(h)
        s[p + "intermediate.dense.weight"] = _f(inter, h)
        s[p + "intermediate.dense.bias"] = _f(inter)
        s[p + "output.dense.weight"] = _f(h, inter)
        s[p + "output.dense.bias"] = _f(h)
        s[p + "output.LayerNorm.weight"] = _f(h)
        s[p + "output.LayerNorm.bias"] = _f(h)
    s["pooler.dense.weight"] = _f(h, h)
    s["pooler.dense.bias"] = _f(h)
    return s


def _generic(n: int, h: int) -> dict[str, KeySpec]:
    s = {}
    for i in range(n):
        s[f"layers.{i}.weight"] = _f(h, h)
        s[f"layers.{i}.bias"] = _f(h)
    return s


# ------------------------------------------------------------------------------------------------
# Adapters


def make_lora(base: str | os.PathLike, path: str | os.PathLike, *, rank: int = 4, alpha: float | None = None,
              dialect: str = "kohya", targets: Iterable[str] = ("*attn*", "*proj*", "*.ff.*", "*mlp*"),
              dtype: str = "float16", seed: int = 0, scale: float = 0.01) -> dict[str, str]:
    """Write a kohya-style LoRA (`lora_up`, `lora_down`, `alpha`) for the weights of the model at
    `base` whose keys match one of `targets` (globs), under `dialect`'s module names (kohya,
    diffusers, comfy or native; archs/keymap.py). Values are random: a LoRA to bake or merge in
    tests, examples and benchmarks. Returns {module name: checkpoint key}. The base is read for
    its header only."""
    from .archs.detect import detect
    from .archs.header import read_header
    from .archs.keymap import module_pieces

    header = read_header(str(base))
    arch = detect(header).arch
    shapes = {arch.canonical(k): tuple(m.shape) for k, m in header.tensors.items()}
    dt = _DTYPE_NAMES[dtype]
    gen = torch.Generator().manual_seed(seed)
    tensors: dict[str, torch.Tensor] = {}
    modules: dict[str, str] = {}
    for key, shape in shapes.items():
        if len(shape) not in (2, 4) or not key.endswith("weight") or not any(fnmatch.fnmatchcase(key, t) for t in targets):
            continue
        for module, rows in module_pieces(arch.name, key, dialect, shapes):
            out = shape[0] if rows is None else rows[1] - rows[0]
            r = min(rank, out, shape[1])
            up_shape = (out, r) + ((1, 1) if len(shape) == 4 else ())
            tensors[module + ".lora_up.weight"] = (torch.randn(up_shape, generator=gen) * scale).to(dt)
            tensors[module + ".lora_down.weight"] = (torch.randn((r,) + shape[1:], generator=gen) * scale).to(dt)
            tensors[module + ".alpha"] = torch.tensor(float(alpha if alpha is not None else r)).to(dt)
            modules[module] = key
    if not tensors:
        matching = any(len(shape) in (2, 4) and any(fnmatch.fnmatchcase(k, t) for t in targets)
                       for k, shape in shapes.items())
        if matching:
            raise ValueError(f"the {dialect} dialect has no module names for {arch.name}'s weights "
                             f"(try dialect=\"native\")")
        raise ValueError(f"no weight of {base} matches {list(targets)}")
    from safetensors.torch import save_file

    save_file(tensors, str(path), metadata={"ss_network_module": "networks.lora", "ss_network_dim": str(rank)})
    return modules


# ------------------------------------------------------------------------------------------------
# Command line


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m mechalang.synth",
                                 description="Write a synthetic model with an architecture's real "
                                             "key names and random values.")
    ap.add_argument("arch", help="architecture name (sd1, sdxl, sd3, flux, llama, bert, ...)")
    ap.add_argument("out", help="output .safetensors path")
    ap.add_argument("--full", action="store_true", help="true full shapes (SD1.5 fp16 is ~2.1 GB)")
    ap.add_argument("--dim-cap", type=int, default=8, help="cap on every dimension (default 8)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dtype", default="float16", help="float16, bfloat16, float32, float64, keep")
    ap.add_argument("--scale", type=float, default=1.0, help="standard deviation of the values")
    ap.add_argument("--layers", type=int, default=None, help="depth of a family (llama, bert)")
    ap.add_argument("--drop", action="append", default=[], help="key or glob to leave out")
    ap.add_argument("--aliases", action="store_true", help="write keys under their old aliases")
    ap.add_argument("--no-optional", action="store_true",
                    help="leave out optional keys (EMA, scheduler buffers, position_ids)")
    ap.add_argument("--lora-of", metavar="BASE", help="write a random LoRA for BASE instead (ARCH is its dialect)")
    ap.add_argument("--rank", type=int, default=4, help="with --lora-of: the LoRA's rank")
    args = ap.parse_args(argv)
    if args.lora_of:
        try:
            modules = make_lora(args.lora_of, args.out, rank=args.rank, dialect=args.arch, dtype=args.dtype,
                                seed=args.seed)
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        print(f"wrote {args.out}: a rank-{args.rank} {args.arch} LoRA of {len(modules)} modules")
        return 0
    try:
        keys = make_model(args.arch, args.out, dim_cap=None if args.full else args.dim_cap,
                          dtype=args.dtype, seed=args.seed, drop=args.drop, scale=args.scale,
                          layers=args.layers, use_aliases=args.aliases,
                          optional=not args.no_optional)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    size = os.path.getsize(args.out)
    print(f"wrote {args.out}: {len(keys)} tensors, {size:,} bytes")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
