"""Starting the disk before torch is imported.

`import torch` takes 1–2 s, during which a run would leave the disk idle. The plan is ready
before that (planning needs no torch), so `start(plan)` asks the kernel, from a background
thread, to read the bytes that the run will need first (`posix_fadvise(POSIX_FADV_WILLNEED)`:
asynchronous read-ahead into the page cache, 8 MiB per call, all inputs in turn) until the
executor is ready to read for itself and calls `stop()`, or EARLY_BYTES (at most an eighth of
the machine's memory) are asked for. The
read-ahead (`prefetch.py`) then reads the ranges asked for through the page cache instead of with
O_DIRECT, which would go to the disk a second time. This module must not import torch.
"""

from __future__ import annotations

import os
import threading

from .direct import ALIGN
from .plan import Op, Plan, Read

EARLY_BYTES = 4 << 30  # the most asked for ahead of the executor, over all inputs...
EARLY_RAM_SHARE = 8  # ...and at most this fraction of the machine's memory (page cache it fills)
STEP = 8 << 20  # the kernel reads at most its read-ahead size (often 8 MiB) per call


class EarlyReads:
    """The byte ranges to ask for, per input, as (start, end) file offsets in the run's order,
    and how far each input's asking got."""

    def __init__(self, ranges: dict[int, list[tuple[int, int]]]):
        self.ranges = ranges
        self.asked: dict[int, list[tuple[int, int]]] = {s: [] for s in ranges}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def covers(self, source: int, start: int, end: int) -> bool:
        with self._lock:
            return any(a <= start and end <= b for a, b in self.asked.get(source, ()))

    def _note(self, source: int, start: int, end: int) -> None:
        with self._lock:
            rs = self.asked[source]
            if rs and rs[-1][1] == start:
                rs[-1] = (rs[-1][0], end)
            else:
                rs.append((start, end))

    def stop(self) -> None:
        """No more asking: the executor reads for itself from now on."""
        self._stop.set()
        self.join()

    def join(self) -> None:
        if self._thread is not None:
            self._thread.join()


def early_budget() -> int:
    try:
        ram = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return EARLY_BYTES // 4
    return min(EARLY_BYTES, ram // EARLY_RAM_SHARE)


def first_ranges(plan: Plan, budget: int | None = None) -> dict[int, list[tuple[int, int]]]:
    """The inputs' byte ranges that the run reads first (outputs' tensors in order, each
    expression's reads left to right), merged where contiguous, up to `budget` bytes in all
    (default: `early_budget()`)."""
    budget = early_budget() if budget is None else budget
    ranges: dict[int, list[tuple[int, int]]] = {}
    total = 0
    seen: set[tuple[int, int]] = set()
    for out in plan.outputs:
        for t in out.tensors:
            stack = [t.expr]
            while stack:
                e = stack.pop()
                if isinstance(e, Op):
                    stack.extend(reversed(e.args))
                    continue
                if not isinstance(e, Read) or e.end <= e.begin or (e.source, e.begin) in seen:
                    continue
                seen.add((e.source, e.begin))
                start = plan.inputs[e.source].data_start + e.begin
                end = start + e.end - e.begin
                rs = ranges.setdefault(e.source, [])
                if rs and rs[-1][1] == start:
                    rs[-1] = (rs[-1][0], end)
                else:  # from the page start: the read-ahead's chunks are page-aligned
                    rs.append((start - start % ALIGN, end))
                total += end - start
                if total >= budget:
                    return ranges
    return ranges


def start(plan: Plan) -> EarlyReads | None:
    """Ask for the first ranges of every input in a background thread; None where the system has
    no posix_fadvise or MECHA_PREFETCH=0."""
    advise = getattr(os, "posix_fadvise", None)
    if advise is None or os.environ.get("MECHA_PREFETCH", "1") == "0":
        return None
    early = EarlyReads(first_ranges(plan))

    def ask() -> None:
        # all inputs in turn, STEP bytes each, so that every input's first keys come first
        queues = {s: list(rs) for s, rs in early.ranges.items()}
        fds = {}
        try:
            for s in queues:
                fds[s] = os.open(plan.inputs[s].path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
            while any(queues.values()):
                for s, rs in queues.items():
                    if early._stop.is_set():
                        return
                    if not rs:
                        continue
                    a, b = rs[0]
                    stop = min(b, a + STEP)
                    advise(fds[s], a, stop - a, os.POSIX_FADV_WILLNEED)
                    early._note(s, a, stop)
                    rs[0] = (stop, b)
                    if stop >= b:
                        rs.pop(0)
        except OSError:
            pass  # only a hint: the run reads what it needs anyway
        finally:
            for fd in fds.values():
                os.close(fd)

    early._thread = threading.Thread(target=ask, name="mecha-early-read", daemon=True)
    early._thread.start()
    return early
