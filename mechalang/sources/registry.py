"""The registry of source kinds, tried in order by what a path is.

A kind says whether it claims a path (`claims(path) -> bool`, from its suffix or, for a folder,
the files it holds: no parsing) and how to open it (`open(path) -> Source`, raising `SourceError`
with the file at fault and the problem). The first kind that claims a path opens it; kinds
registered later are tried first, so a more specific folder layout (a diffusers pipeline, which
also holds `*.safetensors` files) can claim paths before a generic one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable

from .model import Source, SourceError


@dataclass(frozen=True)
class SourceKind:
    name: str  # "safetensors", "hf", "torch", "diffusers", ...
    claims: Callable[[str], bool]
    open: Callable[[str], Source]
    # Shown by `mecha info` for sources of this kind
    description: str = ""
    # Suffixes a bare model name may be completed with, tried in order ("ghostmix" ->
    # "ghostmix.safetensors"); a folder kind has none (a folder is tried by its name).
    suffixes: tuple[str, ...] = ()
    folder: bool = False  # whether it claims folders


_KINDS: list[SourceKind] = []


def register(kind: SourceKind) -> SourceKind:
    """Add a source kind (tried before the ones registered earlier). Re-registering a name
    replaces it in place."""
    for i, k in enumerate(_KINDS):
        if k.name == kind.name:
            _KINDS[i] = kind
            return kind
    _KINDS.insert(0, kind)
    return kind


def kinds() -> list[SourceKind]:
    """The registered kinds, in the order they are tried."""
    return list(_KINDS)


def kind_for(path: str) -> SourceKind | None:
    return next((k for k in kinds() if k.claims(path)), None)


def name_suffixes() -> tuple[str, ...]:
    """Suffixes tried, in order, for a model named without one (sd-mecha / A1111 order)."""
    out: list[str] = []
    for k in reversed(kinds()):  # built-ins first: .safetensors, then .ckpt, .pt, .bin
        for s in k.suffixes:
            if s not in out:
                out.append(s)
    return tuple(out)


def is_source(path: str) -> bool:
    """Whether some kind claims `path` (a cheap test: no file is parsed)."""
    return kind_for(path) is not None


_cache: dict[tuple, Source] = {}


def open_source(path: str | os.PathLike) -> Source:
    """The source at `path`, by the first kind that claims it. Raises SourceError."""
    path = os.fspath(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise SourceError(path, "no such file or folder") from None
    except PermissionError:
        raise SourceError(path, "permission denied") from None
    except OSError as e:
        raise SourceError(path, f"cannot read: {e.strerror or e}") from None
    kind = kind_for(path)
    if kind is None:
        raise SourceError(path, _unknown_layout(path))
    folder = path if os.path.isdir(path) else os.path.dirname(os.path.abspath(path))
    stamp = _folder_stamp(folder) if kind.folder else ()  # a changed shard or config reopens it
    key = (kind.name, os.path.realpath(path), st.st_size, st.st_mtime_ns, stamp)
    cached = _cache.get(key)
    if cached is not None:
        return cached
    from .fp8 import dequantised

    src = dequantised(kind.open(path))
    _cache[key] = src
    return src


def clear_cache() -> None:
    _cache.clear()


def _folder_stamp(path: str) -> tuple:
    """A folder's files' names, sizes and times (a changed shard reopens the source)."""
    if not os.path.isdir(path):
        return ()
    out = []
    try:
        for e in sorted(os.scandir(path), key=lambda e: e.name):
            if e.is_file():
                st = e.stat()
                out.append((e.name, st.st_size, st.st_mtime_ns))
    except OSError:
        return ("?",)
    return tuple(out)


def _unknown_layout(path: str) -> str:
    if os.path.isdir(path):
        try:
            names = sorted(os.listdir(path))
        except OSError as e:
            return f"cannot list the folder: {e.strerror or e}"
        shown = ", ".join(names[:6]) + (f" and {len(names) - 6} more" if len(names) > 6 else "")
        known = "; ".join(k.description for k in reversed(kinds()) if k.folder and k.description)
        return (f"a folder with no known model layout (it holds {shown or 'nothing'}); "
                f"known folder layouts: {known}")
    suffixes = ", ".join(name_suffixes())
    return f"not a model file mechalang reads (known: {suffixes}, and model folders)"
