"""Starting the disk before torch is imported.

`import torch` takes 1–2 s, during which a run would leave the disk idle. The plan is ready
before that (planning needs no torch), so `start(plan)` asks the kernel, from a background
thread, to read the first bytes that the run will need (`posix_fadvise(POSIX_FADV_WILLNEED)`:
asynchronous read-ahead into the page cache) while the interpreter imports torch. The read-ahead
(`prefetch.py`) then reads those ranges through the page cache instead of with O_DIRECT, which
would go to the disk a second time. This module must not import torch.
"""

from __future__ import annotations

import os
import threading

from .plan import Op, Plan, Read

EARLY_BYTES = 1 << 30  # asked for ahead of torch's import, over all inputs


class EarlyReads:
    """The byte ranges asked for, per input, as (start, end) file offsets in the run's order."""

    def __init__(self, ranges: dict[int, list[tuple[int, int]]]):
        self.ranges = ranges
        self._thread: threading.Thread | None = None

    def covers(self, source: int, start: int, end: int) -> bool:
        return any(a <= start and end <= b for a, b in self.ranges.get(source, ()))

    def join(self) -> None:
        if self._thread is not None:
            self._thread.join()


def first_ranges(plan: Plan, budget: int = EARLY_BYTES) -> dict[int, list[tuple[int, int]]]:
    """The inputs' byte ranges that the run reads first (outputs' tensors in order, each
    expression's reads left to right), merged where contiguous, up to `budget` bytes in all."""
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
                else:
                    rs.append((start, end))
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
        # one input's range at a time, round-robin, so that all inputs' first keys come first
        queues = {s: list(rs) for s, rs in early.ranges.items()}
        step = 8 << 20  # the kernel reads at most its read-ahead size (often 8 MiB) per call
        fds = {}
        try:
            for s in queues:
                fds[s] = os.open(plan.inputs[s].path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
            while any(queues.values()):
                for s, rs in queues.items():
                    if not rs:
                        continue
                    a, b = rs[0]
                    stop = min(b, a + step)
                    advise(fds[s], a, stop - a, os.POSIX_FADV_WILLNEED)
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
