"""`torch`, imported on first attribute access.

Method modules are imported by the checker (to read signatures), which must stay torch-free and
fast; their bodies only run in the engine, where torch is loaded anyway.
"""

import importlib
import sys
from types import ModuleType


class _LazyModule(ModuleType):
    def __init__(self, name: str):
        super().__init__(name)
        self.__dict__["_lazy_name"] = name

    def __getattr__(self, attr: str):
        module = sys.modules.get(self._lazy_name) or importlib.import_module(self._lazy_name)
        return getattr(module, attr)


torch = _LazyModule("torch")
