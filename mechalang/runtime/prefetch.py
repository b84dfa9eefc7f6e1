"""Reading inputs ahead of the computation, in large aligned direct reads.

The executor knows before it starts which byte ranges it will read, and in which order (key by
key, slice by slice). `Prefetcher` gets that schedule, groups each input's consecutive ranges into
chunks of about CHUNK bytes with aligned ends, and runs one thread per input file that reads the
chunks in order, with O_DIRECT where the filesystem allows it (no page-cache copy, no cache
filled with bytes read once), up to a window of bytes ahead of the computation. A worker asking
for a range gets a zero-copy view into its chunk (the chunk's memory lives as long as the views).

The disk stays busy while workers compute, with one large read in flight per input, as the
floor benchmark (bench/bench_floor.py) measured fastest on our disks.

Nothing here can make a run wait forever or read wrong bytes: a range that is not in the
schedule, asked for out of order while the window is full, whose chunk failed to read, or asked
for after `stop()`, returns None, and the reader reads it directly as it would without prefetch.
"""

from __future__ import annotations

import mmap
import os
import sys
import threading
import time
from collections import deque
from typing import Iterable

import torch

from . import direct
from .direct import ALIGN, align_down, align_up, cached_fraction
from .early import EarlyReads
from .reader import byte_view

CHUNK = 8 << 20  # bytes per read
WINDOW = 64 << 20  # bytes read ahead, over all inputs
MIN_WINDOW = 2 * CHUNK  # per input, whatever the number of inputs
_MAX_IO = 1 << 30


def window_bytes(sources: int) -> int:
    """The most memory the read-ahead of `sources` input files holds."""
    return max(WINDOW, sources * MIN_WINDOW) + sources * CHUNK  # a chunk may exceed its window


class _Buffers:
    """Page-aligned chunk buffers, reused once no tensor views them any more.

    Fresh memory for every chunk would be faulted in page by page (as costly as the reads), and
    buffers from the C heap stay in the reading thread's malloc arena after the workers free
    them, so the process would keep far more memory than the window. Each buffer is an anonymous
    mapping wrapped by `torch.frombuffer`, which holds a reference to it as long as any view
    of it lives: a buffer whose only reference is this pool's is free.
    """

    def __init__(self, size: int):
        self.size = size
        self._bufs: list[mmap.mmap] = []
        self._lock = threading.Lock()

    def take(self, n: int) -> torch.Tensor:
        if n > self.size:  # a single large tensor: its own mapping, unmapped when unused
            return torch.frombuffer(mmap.mmap(-1, align_up(n)), dtype=torch.uint8)[:n]
        with self._lock:
            for i in range(len(self._bufs)):
                if sys.getrefcount(self._bufs[i]) == 2:  # the list's and the argument's
                    return torch.frombuffer(self._bufs[i], dtype=torch.uint8)[:n]
            buf = mmap.mmap(-1, self.size)
            self._bufs.append(buf)
            return torch.frombuffer(buf, dtype=torch.uint8)[:n]

    def clear(self) -> None:
        with self._lock:
            self._bufs.clear()  # each mapping goes when its last view does


class _Chunk:
    __slots__ = ("start", "end", "need", "consumers", "buf", "state")

    def __init__(self, start: int, end: int, need: int):
        self.start = start  # aligned file offsets
        self.end = end
        self.need = need  # file offset up to which the bytes must exist (the last range's end)
        self.consumers = 0
        self.buf: torch.Tensor | None = None
        self.state = "waiting"  # -> "reading" -> "ready" | "failed"; or "dropped"


class _Source:
    def __init__(self, index: int, path: str, window: int):
        self.index = index
        self.path = path
        self.window = window
        self.chunks: list[_Chunk] = []
        self.held = 0  # bytes of chunks read and not yet handed out to every consumer
        self.blocked = False  # the thread waits for window space
        self.done = False


class Prefetcher:
    """Read-ahead for a run. `get()` from any thread; `stop()` (idempotent) ends it."""

    def __init__(self, paths: list[str], schedule: Iterable[tuple[int, int, int]], *,
                 pin_memory: bool = False, chunk: int | None = None, window: int | None = None,
                 early: EarlyReads | None = None):
        """schedule: (input index, file offset, bytes) of every read, in the order they come.
        early: the ranges asked for before torch was imported (read through the page cache)."""
        self.early = early
        chunk = chunk or CHUNK
        window = window or WINDOW
        self.pin_memory = pin_memory
        self._buffers = _Buffers(chunk)
        per_source = max(window // max(1, len(paths)), 2 * chunk)
        self.sources = [_Source(i, p, per_source) for i, p in enumerate(paths)]
        self._where: dict[tuple[int, int, int], deque[_Chunk]] = {}
        self._cond = threading.Condition()
        self._stopped = False
        self.direct_reads = 0
        self.buffered_reads = 0
        self.wait_seconds = 0.0  # workers' time waiting for chunks (the disk behind the compute)
        self.missed = 0  # ranges the reader had to read itself (out of order, failed, stopped)
        self._build(schedule, chunk)
        self._threads = [threading.Thread(target=self._read_source, args=(s,),
                                          name=f"mecha-read-{s.index}", daemon=True)
                         for s in self.sources if s.chunks]
        for t in self._threads:
            t.start()

    def _build(self, schedule: Iterable[tuple[int, int, int]], chunk: int) -> None:
        current: dict[int, _Chunk] = {}
        for src, offset, n in schedule:
            if n <= 0:
                continue
            s = self.sources[src]
            c = current.get(src)
            end = offset + n
            # the next range continues this chunk if it starts where the last one stopped (or
            # inside its last page) and the chunk stays within its size
            if c is None or not c.need <= offset <= align_up(c.need) \
                    or align_up(end) - c.start > chunk:
                c = _Chunk(align_down(offset), align_up(end), end)
                s.chunks.append(c)
                current[src] = c
            else:
                c.end = align_up(end)
                c.need = end
            c.consumers += 1
            self._where.setdefault((src, offset, n), deque()).append(c)

    # -- the reading threads ------------------------------------------------------------------------

    def _read_source(self, s: _Source) -> None:
        fd = dfd = None
        try:
            fd = os.open(s.path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
            dfd = direct.open_direct(s.path, os.O_RDONLY)
        except OSError:
            pass  # every chunk fails; the reader reports the problem when it reads directly
        try:
            for c in s.chunks:
                size = c.end - c.start
                with self._cond:
                    while not self._stopped and c.state == "waiting" and s.held > 0 \
                            and s.held + size > s.window:
                        s.blocked = True
                        self._cond.notify_all()  # waiters decide whether to read directly
                        self._cond.wait()
                    s.blocked = False
                    if self._stopped:
                        return
                    if c.state != "waiting":  # every consumer read it directly already
                        continue
                    c.state = "reading"
                    s.held += size
                buf, ok = None, False
                if fd is not None:
                    buf, ok, dfd = self._read_chunk(s.index, fd, dfd, c)
                with self._cond:
                    if ok:
                        c.buf, c.state = buf, "ready"
                    else:
                        c.state = "failed"
                        s.held -= size
                    self._cond.notify_all()
        finally:
            with self._cond:
                s.done = True
                self._cond.notify_all()
            for f in (fd, dfd):
                if f is not None:
                    os.close(f)

    def _read_chunk(self, src: int, fd: int, dfd: int | None, c: _Chunk
                    ) -> tuple[torch.Tensor | None, bool, int | None]:
        size = c.end - c.start
        # bytes in the page cache (a warm input, or asked for before torch was imported) are
        # copied from there; a direct read would fetch them from the disk again
        cached = (self.early is not None and self.early.covers(src, c.start, c.need)) \
            or cached_fraction(fd, c.start, size) >= 0.5
        read_fd = fd if cached else dfd
        if self.pin_memory:  # page-locked for asynchronous copies to the GPU (torch recycles it)
            raw = torch.empty(size + ALIGN, dtype=torch.uint8, pin_memory=True)
            skip = (-raw.data_ptr()) % ALIGN
            buf = raw[skip:skip + size]
        else:
            buf = self._buffers.take(size)
        view = byte_view(buf)
        got = 0
        try:
            while got < size:
                if read_fd is not None and read_fd == dfd:
                    try:
                        k = os.preadv(dfd, [view[got:got + _MAX_IO]], c.start + got)
                        self.direct_reads += 1
                    except OSError as e:
                        if e.errno not in direct.REFUSED_ERRNOS:
                            raise
                        os.close(dfd)  # refused: buffered reads for this file from now on
                        dfd = read_fd = None
                        continue
                else:
                    k = os.preadv(fd, [view[got:got + _MAX_IO]], c.start + got)
                    self.buffered_reads += 1
                if k == 0:
                    break
                got += k
                if read_fd is not None and read_fd == dfd and got % ALIGN:  # short: at the end
                    break
        except OSError:
            return None, False, dfd
        return buf, c.start + got >= c.need, dfd

    # -- the workers --------------------------------------------------------------------------------

    def get(self, src: int, offset: int, n: int) -> torch.Tensor | None:
        """Bytes `offset:offset + n` of input `src` as a uint8 tensor (a view into a chunk), or None:
        then the caller reads them itself."""
        key = (src, offset, n)
        s = self.sources[src]
        with self._cond:
            q = self._where.get(key)
            if not q:
                self.missed += 1
                return None
            c = q.popleft()
            if not q:
                del self._where[key]
            t = None
            while not self._stopped and (c.state == "reading" or (
                    c.state == "waiting" and not s.blocked and not s.done)):
                t = t or time.perf_counter()
                self._cond.wait()
            if t is not None:
                self.wait_seconds += time.perf_counter() - t
            view = None
            if c.state == "ready" and c.buf is not None:
                lo = offset - c.start
                view = c.buf[lo:lo + n]
            c.consumers -= 1
            if c.consumers == 0:
                if c.state == "ready":
                    s.held -= c.end - c.start
                    self._cond.notify_all()
                elif c.state == "waiting":
                    c.state = "dropped"
                c.buf = None  # the views keep the memory while they are in use
            if view is None:
                self.missed += 1
            return view

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            for s in self.sources:
                for c in s.chunks:
                    c.buf = None
            self._cond.notify_all()

    def close(self) -> None:
        self.stop()
        for t in self._threads:
            t.join()
        self._buffers.clear()
