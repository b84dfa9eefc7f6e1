"""The built-in source kinds, registered in the order they are tried last-to-first: a file of any
other suffix is read as safetensors (and told it is not one), so `safetensors` is registered first."""

from __future__ import annotations

import os

from . import diffusers, hf, safetensors, torchzip
from .registry import SourceKind, register

register(SourceKind("safetensors", lambda p: os.path.isfile(p), safetensors.open_file,
                    "a .safetensors file", suffixes=safetensors.SUFFIXES[:1]))
register(SourceKind("torch", torchzip.claims, torchzip.open_file,
                    "a torch.save zip file (.ckpt, .pt, .pth, .bin)", suffixes=(".ckpt", ".pt", ".bin")))
register(SourceKind("hf", hf.claims, hf.open_folder,
                    "a Hugging Face folder (config.json with model.safetensors, "
                    "model.safetensors.index.json and shards, or pytorch_model.bin)", folder=True))
# A diffusers pipeline folder also holds *.safetensors files and config.json: tried before `hf`.
register(SourceKind("diffusers", diffusers.claims, diffusers.open_folder,
                    "a diffusers pipeline folder (model_index.json with unet/ or transformer/, vae/, "
                    "text_encoder/...), or one component's folder (config.json with "
                    "diffusion_pytorch_model.safetensors)", folder=True))
