"""Trimming a LoRA written with dynamic ranks (`as lora(rank=64, sv_ratio=20)`).

The file is planned at the largest rank, with every module's `alpha` set to the rank its
factorization kept and the factors past it zeroed. Here each module is cut to its rank
(`up[:, :r]`, `down[:r]`): a new file is written tensor by tensor (never more than one tensor in
memory), with the same metadata and the header of the trimmed shapes.
"""

from __future__ import annotations

import json
import os

import torch

from ..archs.header import read_header
from ..dtypes import element_size
from .reader import byte_view, torch_dtype

UP, DOWN, ALPHA = ".lora_up.weight", ".lora_down.weight", ".alpha"


def trim_lora_file(src: str, dst: str, *, fsync: bool = True) -> None:
    header = read_header(src)
    with open(src, "rb", buffering=0) as f:
        def read(name: str) -> torch.Tensor:
            m = header.tensors[name]
            buf = bytearray(m.end - m.begin)
            f.seek(header.data_start + m.begin)
            f.readinto(buf)
            if not buf:
                return torch.empty(m.shape, dtype=torch_dtype(m.dtype))
            return torch.frombuffer(buf, dtype=torch_dtype(m.dtype)).reshape(m.shape)

        ranks = {name[: -len(ALPHA)]: max(1, int(round(float(read(name).float())))) for name in header.tensors
                 if name.endswith(ALPHA)}

        def shape_of(name: str) -> tuple[int, ...]:
            shape = tuple(header.tensors[name].shape)
            for suffix, dim in ((UP, 1), (DOWN, 0)):
                if name.endswith(suffix) and name[: -len(suffix)] in ranks:
                    r = min(ranks[name[: -len(suffix)]], shape[dim])
                    return shape[:dim] + (r,) + shape[dim + 1:]
            return shape

        entries, pos = {}, 0
        for name, m in header.tensors.items():
            shape = shape_of(name)
            n = element_size(m.dtype)
            for d in shape:
                n *= d
            entries[name] = {"dtype": m.dtype, "shape": list(shape), "data_offsets": [pos, pos + n]}
            pos += n
        obj = {"__metadata__": header.metadata} if header.metadata else {}
        obj.update(entries)
        raw = json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        raw += b" " * (-len(raw) % 8)
        fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.pwrite(fd, len(raw).to_bytes(8, "little") + raw, 0)
            start = 8 + len(raw)
            for name, e in entries.items():
                t = read(name)
                shape = tuple(e["shape"])
                if shape != tuple(t.shape):
                    t = t[:, : shape[1]] if name.endswith(UP) else t[: shape[0]]
                t = t.contiguous()
                data = byte_view(t)  # `t` is held while the view is written
                if len(data):
                    os.pwrite(fd, data, start + e["data_offsets"][0])
            if fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
