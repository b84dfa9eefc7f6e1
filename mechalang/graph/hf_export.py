"""`export m to "out/" as hf(shard_size="5GB")`: a Hugging Face model folder.

The model's tensors, in the same order and dtypes a single-file export would write, are cut into
shards of at most `shard_size` bytes each (a tensor larger than that gets a shard of its own), named
as transformers names them: `model.safetensors` when one shard is enough, else
`model-0000i-of-0000n.safetensors` with `model.safetensors.index.json` (total size and tensor ->
shard map). Every shard carries `format: pt` (what transformers checks) and the provenance metadata.
The first Hugging Face input's other files (`config.json`, tokenizer and generation files) are
copied, with `config.json`'s `torch_dtype` set to the dtype written. All of it is written into a
temporary folder renamed onto the final one at the end (runtime/writer.py).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

from ..runtime.plan import FolderOutput, OutputPlan, layout

DEFAULT_SHARD_SIZE = 5 * 10**9  # transformers' default max_shard_size, "5GB"
TORCH_DTYPE_NAMES = {"F16": "float16", "BF16": "bfloat16", "F32": "float32", "F64": "float64",
                     "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2"}


@dataclass(frozen=True)
class HfFormat:
    shard_size: int | None = None  # bytes; None: the run's --shard-size, else DEFAULT_SHARD_SIZE
    dtype: str | None = None  # an EXPORT_DTYPES name, as `as fp16` would say


def shard_name(i: int, n: int) -> str:
    return "model.safetensors" if n == 1 else f"model-{i + 1:05d}-of-{n:05d}.safetensors"


def split(entries: list[tuple], limit: int) -> list[list[tuple]]:
    """Cut (key, expr, dtype, shape) entries, in order, into runs of at most `limit` bytes."""
    from ..dtypes import element_size

    shards: list[list[tuple]] = [[]]
    size = 0
    for e in entries:
        n = element_size(e[2])
        for d in e[3]:
            n *= d
        if shards[-1] and size + n > limit:
            shards.append([])
            size = 0
        shards[-1].append(e)
        size += n
    return shards


def first_hf_source(node):
    """The first input (in recipe order) read from a Hugging Face folder, or None."""
    for n in node.walk():
        if n.load is not None and getattr(n.load.header, "kind", None) == "hf":
            return n.load.header
    return None


def plan_hf(lowerer, ex, folder: str, fmt: HfFormat, default_shard: int | None) -> tuple[list[OutputPlan], FolderOutput]:
    entries = lowerer.entries(ex, fmt.dtype)
    limit = fmt.shard_size or default_shard or DEFAULT_SHARD_SIZE
    shards = split(entries, limit)
    n = len(shards)
    metadata = dict(lowerer.metadata(ex, folder))
    metadata["format"] = "pt"
    outputs = []
    weight_map: dict[str, str] = {}
    total = 0
    for i, part in enumerate(shards):
        name = shard_name(i, n)
        tensors = layout(part)
        total += max((t.end for t in tensors), default=0)
        for t in tensors:
            weight_map[t.key] = name
        outputs.append(OutputPlan(os.path.join(folder, name), tensors, tuple(sorted(metadata.items())),
                                  folder=folder))
    files: list[tuple[str, str]] = []
    if n > 1:
        index = {"metadata": {"total_size": total}, "weight_map": weight_map}
        files.append(("model.safetensors.index.json", json.dumps(index, indent=2) + "\n"))
    copies: list[tuple[str, str]] = []
    src = first_hf_source(ex.node)
    if src is not None:
        dtypes = [e[2] for e in entries]
        main = max(set(dtypes), key=dtypes.count) if dtypes else None
        for path in src.extra_files:
            name = os.path.basename(path)
            if name == "config.json":
                files.append((name, _config(path, TORCH_DTYPE_NAMES.get(main))))
            else:
                copies.append((path, name))
    return outputs, FolderOutput(folder, tuple(files), tuple(copies))


def _config(path: str, torch_dtype: str | None) -> str:
    """config.json as the input has it, with the dtype written (the checker read it already)."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    if torch_dtype is None:
        return text
    try:
        doc = json.loads(text)
    except ValueError:
        return text
    if isinstance(doc, dict):
        for k in ("torch_dtype", "dtype"):
            if k in doc:
                doc[k] = torch_dtype
    return json.dumps(doc, indent=2, sort_keys=True) + "\n"
