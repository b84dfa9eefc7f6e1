"""mechalang: a typed recipe language for merging neural-network checkpoints.

    import mechalang as mecha
    a = mecha.model("a.safetensors")
    b = mecha.model("b.safetensors")
    mecha.merge(mecha.weighted_sum(a, b, alpha=0.3), "out.safetensors")

The API is in `mechalang.api` (imported on first use: `import mechalang` stays light and never
imports torch); every registered merge method is a function of this module.
"""

import importlib
import os

from ._version import __version__ as __version__

_METHOD_API = ("merge_method", "Weight", "Delta", "Same", "Float", "Int", "Bool", "Choice", "KeyName")
_KIND_API = ("model_kind", "Inferred", "KindContext")


def _submodules() -> set[str]:
    return {n.removesuffix(".py") for n in os.listdir(__path__[0]) if not n.startswith("__")}


def __getattr__(name: str):
    if name.startswith("__") or name in _submodules():
        # `from mechalang import cli` asks for the attribute before importing the submodule
        raise AttributeError(name)
    if name in _METHOD_API:  # writing merge methods (plugins)
        return getattr(importlib.import_module(__name__ + ".methods"), name)
    if name in _KIND_API:  # writing model kinds (plugins)
        return getattr(importlib.import_module(__name__ + ".kinds"), name)
    api = importlib.import_module(__name__ + ".api")
    if name in api.__all__ and name not in ("method_function", "public_names"):
        return getattr(api, name)
    try:
        return api.method_function(name)
    except AttributeError:
        raise AttributeError(f"module 'mechalang' has no attribute {name!r}") from None


def __dir__() -> list[str]:
    api = importlib.import_module(__name__ + ".api")
    return sorted({"__version__", *_METHOD_API, *_KIND_API, *api.public_names()})
