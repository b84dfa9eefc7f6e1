"""SHA-256 of model files, cached, and the A1111-style short hash. Torch-free.

Hashing a 2–7 GB checkpoint takes seconds, so results are cached in
`$XDG_CACHE_HOME/mechalang/hashes.json` (default `~/.cache/mechalang/hashes.json`), keyed by the
file's real path and valid while its size and modification time (ns) are unchanged. A cache that
is missing, unreadable, corrupt or unwritable is simply not used.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from pathlib import Path
from typing import Callable

CHUNK = 8 << 20
_VERSION = 1


def cache_path() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "mechalang" / "hashes.json"


def _identity(path: str | os.PathLike) -> tuple[str, int, int]:
    real = os.path.realpath(path)
    st = os.stat(real)
    return real, st.st_size, st.st_mtime_ns


def _load() -> dict[str, dict]:
    try:
        with open(cache_path(), "r", encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("version") != _VERSION:
        return {}
    files = data.get("files")
    return files if isinstance(files, dict) else {}


def _store(real: str, size: int, mtime_ns: int, digest: str) -> None:
    path = cache_path()
    files = _load()  # re-read: another process may have added entries meanwhile
    files[real] = {"size": size, "mtime_ns": mtime_ns, "sha256": digest}
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump({"version": _VERSION, "files": files}, f, indent=0, sort_keys=True)
        os.replace(tmp, path)
    except OSError:
        try:
            os.unlink(tmp)
        except OSError:
            pass


def cached_sha256(path: str | os.PathLike) -> str | None:
    """The cached digest of `path` if the cache has it for the file as it is now, else None."""
    try:
        real, size, mtime_ns = _identity(path)
    except OSError:
        return None
    entry = _load().get(real)
    if (isinstance(entry, dict) and entry.get("size") == size
            and entry.get("mtime_ns") == mtime_ns and isinstance(entry.get("sha256"), str)):
        return entry["sha256"]
    return None


def sha256_file(path: str | os.PathLike, *, use_cache: bool = True,
                progress: Callable[[int], None] | None = None) -> str:
    """The lowercase hex SHA-256 of the file's bytes, from the cache when still valid.

    `progress(nbytes)` is called after each chunk read (not on a cache hit).
    """
    real, size, mtime_ns = _identity(path)
    if use_cache:
        hit = cached_sha256(real)
        if hit is not None:
            return hit
    h = hashlib.sha256()
    _feed(h, real, progress)
    digest = h.hexdigest()
    if use_cache:
        # cache only if the file did not change while it was read
        try:
            st = os.stat(real)
        except OSError:
            return digest
        if st.st_size == size and st.st_mtime_ns == mtime_ns:
            _store(real, size, mtime_ns, digest)
    return digest


def a1111_short_hash(sha256: str) -> str:
    """The short hash AUTOMATIC1111's web UI shows and writes in merge metadata: the first
    10 hex digits of the file's SHA-256."""
    return sha256[:10].lower()


def sha256_source(files: list[str], *, use_cache: bool = True) -> str:
    """The SHA-256 of a model source (sources.Source.files, in order): of its one file's bytes, or,
    for a source of several files (shards), of the bytes of all its files concatenated in the
    source's order (the index's order of first mention). Each file's own digest is cached as for
    `sha256_file`; the several-file digest is recomputed from the files (it cannot be derived from
    per-file digests)."""
    if len(files) == 1:
        return sha256_file(files[0], use_cache=use_cache)
    h = hashlib.sha256()
    for path in files:
        _feed(h, path)
    return h.hexdigest()


def _feed(h, path: str, progress: Callable[[int], None] | None = None) -> None:
    """Add the bytes of the file at `path` to the hash `h`, read in CHUNK-byte pieces."""
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while True:
            n = f.readinto(buf)
            if not n:
                break
            h.update(view[:n])
            if progress is not None:
                progress(n)
