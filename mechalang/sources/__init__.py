"""Model sources: what a model path names, read without torch.

ONE notion for every input (`model(...)`, `lora(...)`, `mecha merge`, `mecha info`, the catalog):

    src = open_source("models/llama/")        # or a .safetensors, .ckpt, an index.json, ...
    src.kind                                  # "safetensors" | "hf" | "torch" | a registered kind
    src.files                                 # (SourceFile(path, size, mtime_ns), ...): what is read
    src.tensors                               # name -> Stored | Derived, the model's key set
    src.metadata, src.extra_files, src.note   # str->str; non-weight files to copy; "3 shards"

A tensor's `dtype` and `shape` are what the model has; WHERE its bytes are is either

- `Stored(dtype, shape, file, begin, end, name)`: contiguous little-endian bytes at the absolute
  byte range [begin, end) of `files[file]` (a safetensors tensor, a shard's tensor, a tensor inside
  a stored zip entry of a `.ckpt`), read at run time with one pread; or
- `Derived(dtype, shape, op, args, name)`: computed per key from stored tensors by one of the closed
  set `DERIVE_OPS`: "cat" (along dim 0: q/k/v -> in_proj/qkv), "reshape" (linear [o,i] <-> conv
  [o,i,1,1]), "transpose" (2-D), "mul" (args[0] * args[1] broadcast: scaled fp8), "convert" (read
  and convert to `dtype`: fp8 dequantised). Derived tensors nest.

Lowering (graph/lower.py `source_expr`) turns a Stored tensor into a plan `Read` of its file and a
Derived one into `Op("source.<op>", ...)` over its parts' reads (runtime/plan.py SOURCE_OPS), so the
executor reads every stored tensor by the same pread path and memory stays bounded per key. Each
file of a source is one plan input (`InputFile` with data_start 0).

Keys a source hides are simply not in `tensors` (scaled-fp8 scales: sources/fp8.py, applied to
every kind by `open_source`).

A new source kind (e.g. a diffusers pipeline folder) is a module with `claims(path) -> bool` (cheap:
the suffix, or which files a folder holds) and `open(path) -> Source` (raises `SourceError(file,
problem)` naming the file at fault), registered in sources/builtin.py:

    # sources/diffusers.py
    def claims(path):
        return os.path.isfile(os.path.join(path, "model_index.json"))

    def open_folder(path):
        unet = safetensors.stored_tensors(path + "/unet/diffusion_pytorch_model.safetensors", 0)
        te = safetensors.stored_tensors(path + "/text_encoder/model.safetensors", 1)
        files = (unet[0], te[0])
        tensors = {}
        for name, t in unet[1].items():                  # renamed onto the single-file layout
            tensors["model.diffusion_model." + mapped(name)] = t
        q, k, v = (te[1][f"...self_attn.{p}_proj.weight"] for p in "qkv")
        tensors["...attn.in_proj_weight"] = Derived(q.dtype, (3 * q.shape[0],) + q.shape[1:],
                                                     "cat", (q, k, v))
        conv = unet[1]["...proj_in.weight"]              # SD2 linear stored, conv expected
        tensors["...proj_in.weight"] = Derived(conv.dtype, conv.shape + (1, 1), "reshape", (conv,))
        return Source(os.path.abspath(path), "diffusers", files, tensors, {}, extra_files, "sd1")

    # sources/builtin.py
    register(SourceKind("diffusers", diffusers.claims, diffusers.open_folder,
                        "a diffusers pipeline folder (model_index.json)", folder=True))

Kinds registered later are tried first; `safetensors` (registered first) takes any other regular
file. A bare model name (`model("ghostmix")`) is completed with `name_suffixes()` (.safetensors,
.ckpt, .pt, .bin, in that order), then tried as a folder.

Outputs: `export m to "out/" as hf(shard_size="5GB", dtype="bf16")` writes a Hugging Face folder.
An export format is the name after `as` with its options, checked in check/ (check/lora_format.py,
check/hf_format.py, dispatched on `stmt.dtype` in check/evaluate.py `export`) into a format value
stored as `Export.format`, and planned in graph/ (graph/lora_export.py, graph/hf_export.py,
dispatched in graph/lower.py `Lowerer.lower`). A folder output is several `OutputPlan`s whose
`folder` is the folder's final path plus one `runtime.plan.FolderOutput` (small text files,
files copied from an input) in `Plan.folders`; the writer makes all of it in a temporary folder
renamed into place at the end. `as diffusers` belongs beside `hf`: a `DiffusersFormat` value, added
to `check.evaluate.is_folder_format`, planned into one OutputPlan per component file with
`folder=` set (`Lowerer.entries(ex)` gives every key's expression, dtype and shape).

Hashing a source (`--hash`, `model(..., sha256=)`): runtime/hashing.py `sha256_source`, the sha256
of its files' bytes concatenated in `files` order (for one file, that file's sha256).
"""

from __future__ import annotations

from . import builtin  # noqa: E402,F401,I001  (registers the built-in kinds, after the registry)
from .model import DERIVE_OPS, Derived, Source, SourceError, SourceFile, Stored, Tensor
from .registry import SourceKind, clear_cache, is_source, kind_for, kinds, name_suffixes, open_source, register

__all__ = ["DERIVE_OPS", "Derived", "Source", "SourceError", "SourceFile", "SourceKind", "Stored",
           "Tensor", "clear_cache", "is_source", "kind_for", "kinds", "name_suffixes",
           "open_source", "register"]
