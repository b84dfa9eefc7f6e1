"""Where mechalang looks for things, read from the environment in one place.

`MECHA_PATH`: folders searched for imported recipe modules (after the importing file's folder and
`std/`) and for user architectures (after the bundled ones). `MECHA_MODELS_DIR`: folders searched
for model files after the recipe's own folder (and after `--models-dir`). Both are lists separated
by the platform's path separator (`:` on Linux and macOS, `;` on Windows); empty entries are
ignored. `MECHA_CACHE_DIR`: where caches that only save time are kept (default
`$XDG_CACHE_HOME/mechalang`, i.e. `~/.cache/mechalang`); deleting it is always safe.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable


def _path_list(raw: str) -> list[Path]:
    return [Path(p).expanduser() for p in raw.split(os.pathsep) if p.strip()]


def shown_path(path: str | os.PathLike) -> str:
    """A path as users read it in messages: relative to the working folder when below it, else as
    it is."""
    text = os.fspath(path)
    try:
        rel = os.path.relpath(text)
    except ValueError:  # another drive (Windows)
        return text
    return text if rel.startswith("..") else rel


def mecha_path() -> list[Path]:
    """The folders on `MECHA_PATH`, in order."""
    return _path_list(os.environ.get("MECHA_PATH", ""))


def mecha_path_key() -> str:
    """What `mecha_path()` depends on, for caches that must notice a change."""
    return os.environ.get("MECHA_PATH", "")


def cache_dir() -> Path:
    """The folder for caches that only save time (`MECHA_CACHE_DIR`, else the XDG cache folder)."""
    given = os.environ.get("MECHA_CACHE_DIR")
    if given:
        return Path(given).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "mechalang"


def arch_files_key() -> str:
    """What user architectures on `MECHA_PATH` are (names and modification times), for caches of
    architecture detection that must notice a new or changed architecture file."""
    parts = [mecha_path_key()]
    for d in mecha_path():
        try:
            with os.scandir(d) as it:
                parts += sorted(f"{e.name}:{e.stat().st_mtime_ns}" for e in it
                                if e.name.endswith((".toml", ".json")))
        except OSError:
            continue
    return "|".join(parts)


def models_dirs(given: str | os.PathLike | Iterable[str | os.PathLike] | None = None) -> list[Path]:
    """The folders to find models in: those `given` (a folder or several), then `MECHA_MODELS_DIR`,
    without repeats."""
    if given is None:
        dirs: list[Path] = []
    elif isinstance(given, (str, os.PathLike)):
        dirs = [Path(given).expanduser()]
    else:
        dirs = [Path(d).expanduser() for d in given]
    for d in _path_list(os.environ.get("MECHA_MODELS_DIR", "")):
        if d not in dirs:
            dirs.append(d)
    return dirs


NAME_MAX = 255  # bytes in one path component (Linux, macOS, Windows)
PATH_MAX = 4096  # bytes in a whole path (Linux)


def path_problem(text: str) -> str | None:
    """Why `text` cannot be a file path on this system, or None: checked before any file
    function sees it, so the user reads a sentence, not `embedded null byte` or `ENAMETOOLONG`."""
    if "\0" in text:
        return "contains a NUL character"
    try:
        raw = os.fsencode(text)
    except UnicodeEncodeError:
        return "is not valid Unicode"
    if len(raw) > PATH_MAX:
        return f"is longer than {PATH_MAX} bytes"
    for part in raw.split(os.sep.encode()):
        if len(part) > NAME_MAX:
            shown = part[:40].decode(errors="replace")
            return f"has a name longer than {NAME_MAX} bytes (`{shown}...`, {len(part)} bytes)"
    return None


def exists(path: Path) -> bool:
    """`path.exists()` that answers False instead of raising for paths the system refuses."""
    try:
        return path.exists()
    except (OSError, ValueError):
        return False


def is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except (OSError, ValueError):
        return False


def is_dir(path: Path) -> bool:
    try:
        return path.is_dir()
    except (OSError, ValueError):
        return False
