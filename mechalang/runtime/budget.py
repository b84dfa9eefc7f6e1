"""The executor's memory accounting: what a work item is estimated to hold, and the budget that
the work in flight must fit.

    budget = MemoryBudget(limit)
    est = item_estimate(prog, elems, csize=4, registry=REGISTRY)
    if budget.admits(est, alone=not inflight): budget.take(est) … budget.give(est)

Everything that holds tensor memory while a merge runs is counted here, so that one limit bounds
the peak: items being computed (`take`/`give` around each), and anything else that keeps buffers
alive between items (read-ahead, say) can `take` its bytes the same way.

The estimate is an upper bound of what an item holds at once, in elements of the tensor (or of the
slice it computes) times bytes per element:
  - each input read: its raw bytes, plus the compute dtype when converted;
  - each operation: its result in the compute dtype;
  - an operation that is not element-wise also works on whole tensors inside the method: it is
    assumed to copy all its arguments once (a stacked (n, N) work tensor, as the task-vector
    methods make) and to hold two more tensors of scratch (magnitudes, masks, selections);
  - each output in its final dtype.
A streamed item (`Evaluator.run_streamed`) holds the same for one slice at a time.
"""

from __future__ import annotations

import threading

from ..dtypes import element_size
from ..methods.registry import MethodRegistry
from .ops import KeyProgram, is_elementwise, numel
from .plan import Read

SCRATCH_TENSORS = 2  # whole-tensor temporaries of a method that is not element-wise, besides its copy


def item_estimate(prog: KeyProgram, elems: int | None, csize: int,
                  registry: MethodRegistry | None = None) -> int:
    """Bytes a work item of `prog` may hold: over whole tensors (`elems` None) or over slices of
    `elems` elements (sliced or streamed)."""
    out_n = max(numel(tuple(t.shape)) for t in prog.targets) if elems is None else elems
    total = 0
    for node in prog.nodes:
        e = node.expr
        if isinstance(e, Read):
            n = numel(tuple(e.shape)) if elems is None else elems
            total += n * (element_size(e.dtype) + (csize if node.feeds_ops or node.roots else 0))
        else:
            total += out_n * csize
            if not is_elementwise(e.op, registry):
                total += (len(node.children) + SCRATCH_TENSORS) * out_n * csize
    for t in prog.targets:
        total += (numel(tuple(t.shape)) if elems is None else elems) * element_size(t.dtype)
    return total


class MemoryBudget:
    """Bytes of estimated working memory in flight, against a limit. Thread-safe."""

    def __init__(self, limit: int):
        self.limit = limit
        self.used = 0
        self._lock = threading.Lock()

    def admits(self, nbytes: int, *, alone: bool) -> bool:
        """Whether `nbytes` more fit; an item that would run alone is always admitted (it could
        never run otherwise)."""
        with self._lock:
            return alone or self.used + nbytes <= self.limit

    def take(self, nbytes: int) -> None:
        with self._lock:
            self.used += nbytes

    def give(self, nbytes: int) -> None:
        with self._lock:
            self.used -= nbytes
