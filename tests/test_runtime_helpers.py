"""Helpers for the runtime tests: write small safetensors files and build key plans by hand
(the way the front end's lowering does), plus tests of the helpers themselves."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import torch
from safetensors.torch import save_file

from mechalang.dtypes import element_size
from mechalang.methods.registry import MethodRegistry, build_spec
from mechalang.runtime.plan import InputFile, KeyExpr, Op, OutputPlan, Plan, Read, layout


def save(path: Path, tensors: dict[str, torch.Tensor], metadata: dict | None = None) -> Path:
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path), metadata=metadata)
    return path


class Model:
    """An input file with its parsed header: `m.read(key)` is the plan's Read of that tensor."""

    def __init__(self, path: Path, source: int):
        self.path = str(path)
        self.source = source
        with open(path, "rb") as f:
            n = struct.unpack("<Q", f.read(8))[0]
            header = json.loads(f.read(n))
        header.pop("__metadata__", None)
        self.header = header
        self.file = InputFile(self.path, 8 + n, os.path.getsize(path), Path(path).stem)

    def keys(self) -> list[str]:
        return list(self.header)

    def read(self, key: str) -> Read:
        e = self.header[key]
        return Read(self.source, key, e["dtype"], tuple(e["shape"]), *e["data_offsets"])

    def dtype(self, key: str) -> str:
        return self.header[key]["dtype"]

    def shape(self, key: str) -> tuple[int, ...]:
        return tuple(self.header[key]["shape"])


def models(*paths: Path) -> list[Model]:
    return [Model(p, i) for i, p in enumerate(paths)]


def output(path: Path, entries: list[tuple[str, KeyExpr, str, tuple[int, ...]]],
           metadata: dict | None = None) -> OutputPlan:
    return OutputPlan(str(path), layout(entries), tuple((metadata or {}).items()))


def plan(ms: list[Model], *outs: OutputPlan, precision: str = "fp32") -> Plan:
    return Plan(tuple(m.file for m in ms), tuple(outs), precision)


def scale(e: KeyExpr, factor: float) -> Op:
    return Op("scale", (e,), (("factor", factor),))


def add(a: KeyExpr, b: KeyExpr) -> Op:
    return Op("add", (a, b))


def sub(a: KeyExpr, b: KeyExpr) -> Op:
    return Op("sub", (a, b))


def registry_with(*funcs, elementwise: tuple = ()) -> MethodRegistry:
    """A private registry holding `funcs` (plain functions annotated like merge methods)."""
    reg = MethodRegistry()
    for f in funcs:
        reg.register(build_spec(f, elementwise=f in elementwise))
    return reg


def temp_leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in Path(folder).iterdir() if ".mecha-tmp-" in p.name)


def header_of(path: Path) -> dict:
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        return json.loads(f.read(n))


# ------------------------------------------------------------------------------------------------


def test_model_reads_match_safetensors_offsets(tmp_path):
    t = {"x": torch.arange(6, dtype=torch.float32).reshape(2, 3), "y": torch.ones(4, dtype=torch.int64)}
    m = Model(save(tmp_path / "m.safetensors", t), 0)
    for key, value in t.items():
        r = m.read(key)
        assert r.shape == tuple(value.shape)
        assert r.end - r.begin == value.numel() * element_size(r.dtype)
        with open(m.path, "rb") as f:
            f.seek(m.file.data_start + r.begin)
            raw = f.read(r.end - r.begin)
        assert raw == value.numpy().tobytes()
