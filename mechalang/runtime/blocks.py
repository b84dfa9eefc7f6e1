"""Assembling an output file in aligned blocks and writing each block with O_DIRECT.

Tensors finish in any order and at unaligned offsets, but direct writes need aligned offsets and
lengths. So the file is cut into fixed blocks (8 MiB); each piece written is copied into its
blocks' buffers, and a block is handed to a writer thread as soon as every byte of it that the
layout covers has arrived. The writer thread writes it with one direct `pwrite` while the workers
go on computing, so the disk stays busy and the page cache never fills with dirty output pages.

Memory is bounded: at most `max_open` blocks are being assembled at once (tensors finish nearly
in file order, so a handful are open at a time). A piece whose block cannot be opened because
that many are already open is written with an ordinary buffered `pwrite` instead, as is every
later piece of that block: correct in any order, just not direct. Block buffers are reused.

The last block is padded to the alignment; the file is cut back to its size afterwards. If the
filesystem refuses a direct write (EINVAL), that block and all later ones are written buffered.
"""

from __future__ import annotations

import bisect
import ctypes
import mmap
import os
import queue
import threading
import time
from typing import Callable

from .direct import REFUSED_ERRNOS, align_up, aligned_buffer

BLOCK = 8 << 20
MAX_OPEN = 4  # blocks assembled at once
QUEUE = 2  # complete blocks waiting for the writer thread


class _Block:
    __slots__ = ("index", "buf", "addr", "filled", "expected", "busy")

    def __init__(self, index: int, buf: mmap.mmap, expected: int):
        self.index = index
        self.buf = buf
        self.addr = ctypes.addressof(ctypes.c_char.from_buffer(buf))
        self.filled = 0
        self.expected = expected
        self.busy = 0  # pieces being copied in right now


class BlockWriter:
    """One output file's direct writes. `put()` from any thread; `finish()` once at the end, or
    `close()` to abandon it.

    spans: the file's byte ranges that will be written, as sorted (start, end, name) triples
        (the header, then each tensor); bytes outside them are left zero.
    write_error: makes the exception to raise from an OSError of a write, given the name of the
        first span in the block that failed.
    """

    def __init__(self, direct_fd: int, buffered_fd: int, size: int,
                 spans: list[tuple[int, int, str | None]],
                 write_error: Callable[[OSError, str | None], BaseException], *,
                 block: int | None = None, max_open: int | None = None):
        self.direct_fd = direct_fd
        self.buffered_fd = buffered_fd
        self.size = size
        self.block = block = block or BLOCK
        self.max_open = max_open or MAX_OPEN
        self.write_error = write_error
        self.spans = spans
        self._starts = [s for s, _, _ in spans]
        self.expected = self._coverage(size, spans, block)
        self.direct = True  # False once the filesystem refused a direct write
        self.direct_bytes = 0
        self.buffered_bytes = 0
        self._open: dict[int, _Block] = {}
        self._spilled: set[int] = set()  # blocks written buffered, piece by piece
        self._done: set[int] = set()  # blocks handed to the writer thread
        self._free: list[mmap.mmap] = []
        self._all: list[mmap.mmap] = []
        self._lock = threading.Lock()
        self._queue: queue.Queue = queue.Queue(QUEUE)
        self.error: BaseException | None = None
        self.wait_seconds = 0.0  # workers' time waiting for the writer thread
        self._thread = threading.Thread(target=self._writer, name="mecha-write", daemon=True)
        self._thread.start()

    @staticmethod
    def _coverage(size: int, spans, block: int) -> list[int]:
        """Bytes of each block that the spans cover."""
        expected = [0] * (-(-size // block))
        for start, end, _ in spans:
            k = start // block
            while start < end:
                stop = min(end, (k + 1) * block)
                expected[k] += stop - start
                start = stop
                k += 1
        return expected

    def _block_len(self, k: int) -> int:
        return min(self.block, self.size - k * self.block)

    def name_at(self, offset: int) -> str | None:
        """The name of the first span that ends after `offset` (what a failed block held)."""
        i = max(0, bisect.bisect_right(self._starts, offset) - 1)
        while i < len(self.spans) and (self.spans[i][1] <= offset or self.spans[i][2] is None):
            i += 1
        return self.spans[i][2] if i < len(self.spans) else None

    # -- from the workers ---------------------------------------------------------------------------

    def put(self, offset: int, data: memoryview) -> None:
        """Bytes `data` at file offset `offset` (the memory is copied before returning)."""
        n = len(data)
        if n == 0:
            return
        src = ctypes.addressof(ctypes.c_char.from_buffer(data)) if not data.readonly else None
        if src is None:  # read-only bytes (the header): copy them into a writable buffer first
            tmp = bytearray(data)
            data = memoryview(tmp)
            src = ctypes.addressof(ctypes.c_char.from_buffer(tmp))
        pieces: list[tuple[int, int, int, _Block | None]] = []  # (block, start, stop, block state)
        with self._lock:
            if self.error is not None:
                raise self.error
            k = offset // self.block
            pos = offset
            while pos < offset + n:
                stop = min(offset + n, (k + 1) * self.block)
                st = self._open.get(k)
                if st is None and k not in self._spilled and k not in self._done:
                    if len(self._open) >= self.max_open:
                        self._spilled.add(k)
                    else:
                        st = self._open[k] = _Block(k, self._take(), self.expected[k])
                        if st.expected < self._block_len(k):  # gaps in the layout stay zero
                            ctypes.memset(st.addr, 0, self.block)
                if st is not None:
                    st.busy += 1
                pieces.append((k, pos, stop, st))
                pos = stop
                k += 1
        done: list[_Block] = []
        failure: BaseException | None = None
        for k, start, stop, st in pieces:
            if st is not None:
                ctypes.memmove(st.addr + start - k * self.block, src + start - offset,
                               stop - start)
            elif failure is None:
                try:
                    self._pwrite_all(self.buffered_fd, data[start - offset:stop - offset], start)
                except OSError as e:
                    failure = self.write_error(e, self.name_at(start))
                self.buffered_bytes += stop - start
        with self._lock:
            for k, start, stop, st in pieces:
                if st is None:
                    continue
                st.busy -= 1
                st.filled += stop - start
                if st.filled == st.expected and st.busy == 0:
                    del self._open[k]
                    self._done.add(k)
                    done.append(st)
        for st in done:
            if self._queue.full():
                t = time.perf_counter()
                self._queue.put(st)  # waits while the writer thread is behind: the disk's pace
                self.wait_seconds += time.perf_counter() - t
            else:
                self._queue.put(st)
        if failure is not None:
            raise failure

    def _take(self) -> mmap.mmap:
        if self._free:
            return self._free.pop()
        buf = aligned_buffer(self.block)
        self._all.append(buf)
        return buf

    # -- the writer thread --------------------------------------------------------------------------

    def _writer(self) -> None:
        while True:
            st = self._queue.get()
            if st is None:
                return
            if self.error is None:
                try:
                    self._write_block(st)
                except OSError as e:
                    self.error = self.write_error(e, self.name_at(st.index * self.block))
                except BaseException as e:  # noqa: BLE001 - reported by put() or finish()
                    self.error = e
            with self._lock:
                self._free.append(st.buf)

    def _write_block(self, st: _Block) -> None:
        offset = st.index * self.block
        n = self._block_len(st.index)
        view = memoryview(st.buf)
        if self.direct:
            try:
                self._pwrite_all(self.direct_fd, view[:align_up(n)], offset)
                self.direct_bytes += n
                return
            except OSError as e:
                if e.errno not in REFUSED_ERRNOS or self.direct_bytes:
                    raise
                self.direct = False  # refused from the start: this filesystem, buffered it is
        self._pwrite_all(self.buffered_fd, view[:n], offset)
        self.buffered_bytes += n

    @staticmethod
    def _pwrite_all(fd: int, view: memoryview, offset: int) -> None:
        done = 0
        while done < len(view):
            done += os.pwrite(fd, view[done:done + (1 << 30)], offset + done)

    # -- ending -------------------------------------------------------------------------------------

    def finish(self) -> None:
        """Write the blocks still open (only where the layout left bytes unwritten), wait for the
        writer thread, and cut the padded last block back to the file's size."""
        with self._lock:
            rest = sorted(self._open.values(), key=lambda b: b.index)
            self._open.clear()
        for st in rest:
            self._queue.put(st)
        self._queue.put(None)
        self._thread.join()
        self._release()
        if self.error is not None:
            raise self.error
        if self.direct_bytes and os.fstat(self.buffered_fd).st_size != self.size:
            os.ftruncate(self.buffered_fd, self.size)

    def close(self) -> None:
        """Abandon the file: stop the writer thread without writing what is left."""
        if self._thread.is_alive():
            if self.error is None:
                self.error = RuntimeError("abandoned")
            with self._lock:
                self._open.clear()
            self._queue.put(None)
            self._thread.join()
        self._release()

    def _release(self) -> None:
        with self._lock:
            for buf in self._all:
                try:
                    buf.close()
                except BufferError:  # still viewed by a ctypes object in flight; the GC frees it
                    pass
            self._all.clear()
            self._free.clear()
