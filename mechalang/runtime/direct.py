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

import ctypes
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


_libc = None


def _mincore_lib():
    global _libc
    if _libc is None:
        lib = ctypes.CDLL(None, use_errno=True)
        lib.mmap.restype = ctypes.c_void_p
        lib.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                             ctypes.c_int, ctypes.c_int64]
        lib.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
        lib.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
        _libc = lib
    return _libc


def cached_fraction(fd: int, offset: int, length: int) -> float:
    """The fraction of the pages of bytes `offset:offset + length` of file `fd` that are in the
    page cache (mincore on a mapping that is never touched, so nothing is read); 0.0 when it
    cannot be told."""
    if length <= 0:
        return 0.0
    start = offset - offset % mmap.PAGESIZE
    n = offset + length - start
    try:
        lib = _mincore_lib()
    except (OSError, AttributeError):
        return 0.0
    addr = lib.mmap(None, n, mmap.PROT_READ, mmap.MAP_SHARED, fd, start)
    if addr is None or addr == ctypes.c_void_p(-1).value:
        return 0.0
    try:
        pages = -(-n // mmap.PAGESIZE)
        vec = (ctypes.c_ubyte * pages)()
        if lib.mincore(addr, n, vec) != 0:
            return 0.0
        return (pages - bytes(vec).count(0)) / pages
    finally:
        lib.munmap(addr, n)
