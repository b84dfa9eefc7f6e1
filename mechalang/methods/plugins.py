"""User merge methods: `--plugin FILE.py` and the `mechalang.methods` entry-point group (registry.load_entry_points).

A plugin is a Python file (or installed module) that defines functions decorated with
`@merge_method` (`from mechalang import merge_method`). Importing it registers them; the checker
and the engine then treat them like built-ins. A name clash with an existing method is an error,
so a plugin cannot silently change what a recipe means.
"""

from __future__ import annotations

import hashlib
import importlib.util
import sys
from pathlib import Path

from . import registry

_loaded_files: dict[str, str] = {}


def load_plugin_file(path: str) -> str | None:
    """Import a plugin file; None on success, else what went wrong (one line)."""
    p = Path(path).expanduser()
    if not p.is_file():
        return "no such file" if not p.exists() else "not a file"
    real = str(p.resolve())
    if real in _loaded_files:
        return None
    registry._ensure_builtins()
    name = "mechalang_plugin_" + hashlib.sha1(real.encode()).hexdigest()[:12]
    spec = importlib.util.spec_from_file_location(name, real)
    if spec is None or spec.loader is None:
        return "cannot be imported as a Python module"
    module = importlib.util.module_from_spec(spec)
    previous = registry._current_source[0]
    registry._current_source[0] = p.name
    try:
        sys.modules[name] = module
        spec.loader.exec_module(module)
    except Exception as exc:  # a plugin's own error: report it, never a traceback
        sys.modules.pop(name, None)
        return f"{type(exc).__name__}: {exc}"
    finally:
        registry._current_source[0] = previous
    _loaded_files[real] = name
    return None
