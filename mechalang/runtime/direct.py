"""Direct I/O (O_DIRECT): page-aligned buffers and opening files for it, with a fallback.

Direct reads and writes move bytes between the disk and the process's own buffers without going
through the page cache: no copy into the cache, no dirty pages that the kernel throttles writers
on, no cache filled with bytes that are read once. They need the buffer address, the file offset
and the length aligned (to the device's logical block; 4096 covers every common device). Some
filesystems refuse O_DIRECT (network filesystems, older tmpfs): `open()` or the first read or
write then fails with EINVAL, and the callers fall back to ordinary buffered I/O.

MECHA_DIRECT_IO=0 in the environment turns direct I/O off (buffered I/O everywhere), for
comparing the two and for filesystems that accept O_DIRECT but handle it badly.
"""

from __future__ import annotations

import errno
import mmap
import os

ALIGN = 4096
O_DIRECT = getattr(os, "O_DIRECT", 0)
# errors that mean "this file or filesystem does not do O_DIRECT", not "the disk failed"
REFUSED_ERRNOS = {errno.EINVAL, errno.EOPNOTSUPP, getattr(errno, "ENOTSUP", errno.EOPNOTSUPP)}


def enabled() -> bool:
    return O_DIRECT != 0 and os.environ.get("MECHA_DIRECT_IO", "1") != "0"


def align_down(n: int) -> int:
    return n - n % ALIGN


def align_up(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


def aligned_buffer(n: int) -> mmap.mmap:
    """`n` bytes (rounded up to whole pages) of page-aligned, zero-filled anonymous memory."""
    return mmap.mmap(-1, max(align_up(n), ALIGN))


def open_direct(path: str, flags: int) -> int | None:
    """`path` opened with `flags | O_DIRECT`, or None where direct I/O is off or refused (the
    caller then uses its buffered descriptor). Other errors propagate."""
    if not enabled():
        return None
    try:
        return os.open(path, flags | O_DIRECT | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        if e.errno in REFUSED_ERRNOS:
            return None
        raise
