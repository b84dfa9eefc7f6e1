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
