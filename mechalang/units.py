"""How sizes are shown to users, in one place: `2.1 GB`, `512 bytes` (decimal units, as file
managers and disk tools show them)."""

from __future__ import annotations


def format_bytes(n: float) -> str:
    """`2.1 GB`, `1.5 KB`, `999 bytes`, `1 byte`."""
    if abs(n) < 1000:
        n = int(n)
        return f"{n} byte{'s' if n != 1 else ''}"
    for unit in ("KB", "MB", "GB", "TB", "PB"):
        n /= 1000.0
        if abs(n) < 1000 or unit == "PB":
            return f"{n:.1f} {unit}"
    raise AssertionError("unreachable")


_SIZE_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
               "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}


def parse_size(text: str | int) -> int | None:
    """A size as Hugging Face writes `max_shard_size`: "5GB" (10^9), "500MiB" (2^20), or a whole
    number of bytes. None when it is not one (or not positive)."""
    if isinstance(text, bool):
        return None
    if isinstance(text, int):
        return text if text > 0 else None
    if not isinstance(text, str):
        return None
    import re

    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]*)\s*", text)
    if not m or m.group(2).upper() not in _SIZE_UNITS:
        return None
    n = int(float(m.group(1)) * _SIZE_UNITS[m.group(2).upper()])
    return n if n > 0 else None
