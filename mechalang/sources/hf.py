"""Hugging Face model folders: `config.json` beside `model.safetensors`, or shards listed by
`model.safetensors.index.json` (or the `pytorch_model.bin` forms of both). The index file itself
may be named as the model path.

An index is `{"metadata": {...}, "weight_map": {tensor name: shard file name}}`; every shard is a
safetensors (or torch zip) file in the same folder. The source's files are the shards in the
order the index first names them; its tensors keep the index's names.
"""

from __future__ import annotations

import json
import os

from . import safetensors as st
from . import torchzip
from .model import Source, SourceError, SourceFile, Tensor

SINGLE = ("model.safetensors", "pytorch_model.bin")
INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".ckpt", ".pt", ".pth", ".msgpack", ".h5", ".onnx",
                   ".gguf", ".index.json")


def claims(path: str) -> bool:
    if os.path.isdir(path):
        return any(os.path.isfile(os.path.join(path, n)) for n in INDEXES + SINGLE)
    return path.lower().endswith(".index.json") and os.path.isfile(path)


def layout(folder: str) -> str | None:
    """The weights file or index a folder's model is read from, in the order transformers prefers."""
    for n in INDEXES[:1] + SINGLE[:1] + INDEXES[1:] + SINGLE[1:]:
        if os.path.isfile(os.path.join(folder, n)):
            return n
    return None


def open_folder(path: str) -> Source:
    path = os.path.abspath(path)
    if os.path.isdir(path):
        folder, weights = path, layout(path)
        assert weights is not None  # claims() said so
    else:
        folder, weights = os.path.dirname(path), os.path.basename(path)
    config = _config(folder)
    target = os.path.join(folder, weights)
    if weights.endswith(".index.json"):
        files, tensors, metadata = _sharded(target)
        note = f"{len(files)} shard{'s' if len(files) != 1 else ''}"
    else:
        one = (st.open_file if weights.endswith(".safetensors") else torchzip.open_file)(target)
        files, tensors, metadata = one.files, one.tensors, dict(one.metadata)
        note = "1 file"
    if config is not None:
        _check_config(os.path.join(folder, "config.json"), config, tensors)
    else:
        note += ", no config.json"
    extra = tuple(sorted(os.path.join(folder, n) for n in os.listdir(folder)
                         if os.path.isfile(os.path.join(folder, n)) and not n.startswith(".")
                         and not n.lower().endswith(WEIGHT_SUFFIXES)))
    return Source(path, "hf", tuple(files), tensors, metadata, extra, note)


def _config(folder: str) -> dict | None:
    p = os.path.join(folder, "config.json")
    if not os.path.isfile(p):
        return None
    doc = read_json(p)
    if not isinstance(doc, dict):
        raise SourceError(p, "config.json is not a JSON object")
    return doc


def read_json(p: str, pairs_hook=None):
    """A JSON file of a folder source, or a SourceError that says what is wrong with it."""
    try:
        with open(p, encoding="utf-8") as f:
            return json.load(f, object_pairs_hook=pairs_hook)
    except FileNotFoundError:
        raise SourceError(p, "missing") from None
    except json.JSONDecodeError as e:
        raise SourceError(p, f"not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})") from None
    except UnicodeDecodeError:
        raise SourceError(p, "not UTF-8 text") from None
    except OSError as e:
        raise SourceError(p, f"cannot read: {e.strerror or e}") from None


class _Duplicate(Exception):
    pass


def _no_duplicates(pairs):
    seen: dict = {}
    for k, v in pairs:
        if k in seen:
            raise _Duplicate(k)
        seen[k] = v
    return seen


def _sharded(index_path: str) -> tuple[list[SourceFile], dict[str, Tensor], dict[str, str]]:
    folder = os.path.dirname(index_path)
    try:
        doc = read_json(index_path, _no_duplicates)
    except _Duplicate as d:
        raise SourceError(index_path, f"the index names tensor `{d.args[0]}` twice") from None
    wm = doc.get("weight_map") if isinstance(doc, dict) else None
    if not isinstance(wm, dict) or not all(isinstance(v, str) for v in wm.values()):
        raise SourceError(index_path, "an index needs a `weight_map` object of tensor name -> "
                                      "shard file name")
    if not wm:
        raise SourceError(index_path, "the index's `weight_map` is empty")
    shards: list[str] = []
    for shard in wm.values():
        if shard not in shards:
            shards.append(shard)
    files: list[SourceFile] = []
    per_shard: dict[str, dict] = {}
    metadata: dict[str, str] = {}
    for i, shard in enumerate(shards):
        if os.path.basename(shard) != shard or shard in ("", ".", ".."):
            raise SourceError(index_path, f"shard `{shard}` is not a file name in the index's folder")
        sp = os.path.join(folder, shard)
        if not os.path.isfile(sp):
            missing = [n for n, s in wm.items() if s == shard]
            raise SourceError(index_path, f"shard `{shard}` is missing (it holds {len(missing)} "
                                          f"tensor{'s' if len(missing) != 1 else ''}, e.g. "
                                          f"`{missing[0]}`)")
        if shard.lower().endswith(".safetensors"):
            f, tensors, meta = st.stored_tensors(sp, i)
            if i == 0:
                metadata = meta
        else:
            one = torchzip.open_file(sp)
            f = one.files[0]
            tensors = {n: _refile(t, i) for n, t in one.tensors.items()}
        files.append(f)
        per_shard[shard] = tensors
    out: dict[str, Tensor] = {}
    for name, shard in wm.items():
        t = per_shard[shard].get(name)
        if t is None:
            raise SourceError(os.path.join(folder, shard),
                              f"the index says tensor `{name}` is in this shard, but it is not")
        out[name] = t
    return files, out, metadata


def _refile(t: Tensor, index: int) -> Tensor:
    """`t` (read from a one-file source) as stored in file `index` of a several-file source."""
    from dataclasses import replace

    from .model import Stored

    if isinstance(t, Stored):
        return replace(t, file=index)
    return replace(t, args=tuple(_refile(a, index) for a in t.args))


def _check_config(path: str, config: dict, tensors: dict[str, Tensor]) -> None:
    """What a config says and the weights can contradict: the embedding's vocabulary and width,
    and the number of layers."""
    embed = next((t for n, t in tensors.items() if n.endswith("embed_tokens.weight")), None)
    if embed is not None and len(embed.shape) == 2:
        for fld, dim in (("vocab_size", 0), ("hidden_size", 1)):
            v = config.get(fld)
            if isinstance(v, int) and v != embed.shape[dim]:
                raise SourceError(path, f"config.json says {fld} = {v}, but the weights' "
                                        f"embed_tokens.weight has shape {list(embed.shape)}")
    n_layers = config.get("num_hidden_layers")
    if isinstance(n_layers, int):
        import re

        # the decoder stack only (`model.layers.N.`, `transformer.h.N.`): a vision tower's or an
        # encoder's layers are counted by other config fields
        stack = re.compile(r"^(?:model\.|transformer\.)?(?:layers|h)\.(\d+)\.")
        found = {int(m.group(1)) for m in map(stack.match, tensors) if m}
        if found and max(found) + 1 != n_layers:
            raise SourceError(path, f"config.json says num_hidden_layers = {n_layers}, but the "
                                    f"weights have {max(found) + 1} layers")
