"""Executing a key plan: stream every output key through a thread pool, with bounded memory.

    stats = execute(plan, threads=4, device="cpu", check_finite=False, progress=bar.advance)

Output tensors are grouped by key name across all outputs: one *key job* computes every output's
tensor for that key, so work shared between exports runs once per key (`ops.KeyProgram`). Jobs
whose expressions are element-wise are split into slices of the flattened tensors; large jobs
whose methods are element-wise once some whole-tensor statistics are known (TIES' thresholds: a
method with a stream, MethodSpec.streamed) are one item evaluated slice by slice in passes
(`Evaluator.run_streamed`); every slice or whole job is a *work item*. Items run on a thread pool
(torch releases the GIL in reads, writes and arithmetic), with at most `2 × threads` items queued
and an estimate of their memory kept under a budget (budget.py: `item_estimate`, `MemoryBudget`),
so the peak memory depends on the work in flight, never on the number or size of models.
Each result is written at its precomputed offset as soon as it exists: the output bytes do not
depend on the thread count or on the order in which items finish.

Torch runs single-threaded inside each item (the pool provides the parallelism), which also keeps
results independent of the number of threads for methods that reduce over a tensor.

Every problem a user can act on is a `RuntimeFailure`; on any failure or interrupt every temporary
output file is removed and the inputs are untouched.
"""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import sys
import threading
import time
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Callable, Iterator

import torch

from ..dtypes import DTYPES, element_size
from ..methods.registry import REGISTRY, MethodRegistry
from ..runtime.plan import BUILTIN_OPS, ENGINE_OPS, Op, OutTensor, Plan, Read
from ..units import format_bytes
from .budget import MemoryBudget, item_estimate
from .early import EarlyReads
from .errors import RunCancelled, RuntimeFailure
from .ops import Cancelled, Evaluator, KeyProgram, can_slice, can_stream, compute_dtype, numel
from .prefetch import Prefetcher, window_bytes
from .reader import TORCH_DTYPES, InputReader
from .writer import DIRECT_MEMORY, OutputWriter

SLICE_ELEMS = 1 << 20  # elements per slice of an element-wise key (a power of two)
GPU_SLICE_ELEMS = 1 << 23  # on a GPU: fewer, larger transfers and kernel launches
MAX_NONFINITE = 10  # with check_finite: stop after this many offending keys


@dataclass(frozen=True)
class OutputStats:
    path: str
    keys: int
    bytes: int  # size of the file written, header included


@dataclass(frozen=True)
class RunStats:
    outputs: tuple[OutputStats, ...]
    seconds: float  # wall time of execute()
    peak_rss: int  # the process's peak resident set size so far, in bytes
    first_key_seconds: float | None  # from the start of execute() to the first key fully written
    keys: int  # key jobs run (distinct key names over all outputs)
    bytes_read: int
    threads: int
    device: str


def execute(plan: Plan, *, threads: int | None = None, device: str = "cpu",
            check_finite: bool = False, progress: Callable[[int, int], None] | None = None,
            registry: MethodRegistry | None = None, memory_budget: int | None = None,
            fsync: bool | None = None, cancel: threading.Event | None = None,
            early: EarlyReads | None = None) -> RunStats:
    """Run `plan`, writing every output atomically. Returns what was done.

    threads: worker threads (default: the usable cores, at most 16).
    device: "cpu", "cuda" or "cuda:N": where arithmetic runs; results come back to the CPU.
    check_finite: fail (listing the keys, up to 10) if a float output has NaN or inf values.
    progress: called from the calling thread as `progress(tensors, nbytes)` increments, in output
        tensors and bytes: they add up to the tensors and data bytes of all outputs.
    registry: the merge methods to use (default: the global registry).
    memory_budget: bytes of estimated working memory allowed in flight (default: 1/8 of the
        machine's memory, between 1 and 16 GiB), the read-ahead and output blocks included; one
        item always runs, whatever its size.
    fsync: flush outputs to disk before renaming them into place (default: yes, unless the
        environment sets MECHA_FSYNC=0, for benchmarks and throwaway outputs).
    cancel: an event another thread may set to stop the run: work in flight stops at the next
        operation, nothing is written, and `RunCancelled` is raised.
    early: the read-ahead that `early.start(plan)` began before torch was imported, if any.
    """
    t0 = time.perf_counter()
    registry = registry if registry is not None else REGISTRY
    dev = _resolve_device(device)
    cdtype = compute_dtype(plan.precision)
    workers = _default_threads() if threads is None else int(threads)
    if workers < 1:
        raise RuntimeFailure(f"--threads must be at least 1, got {threads}")
    budget = memory_budget if memory_budget is not None else _default_budget()
    if fsync is None:
        fsync = os.environ.get("MECHA_FSYNC", "1") != "0"
    _check_paths(plan)
    _validate(plan, registry)

    jobs = _group(plan)
    reader = InputReader(plan.inputs, pin_memory=dev.type == "cuda")
    writer = OutputWriter(plan.outputs, fsync=fsync, folders=plan.folders)
    evaluator = Evaluator(reader, device=dev, dtype=cdtype, registry=registry,
                          check_finite=check_finite)
    io_memory = _io_memory(plan, writer)
    run = _Run(jobs, evaluator, writer, dev, registry, cdtype, workers, max(0, budget - io_memory),
               progress, t0, cancel)

    prev_threads = torch.get_num_threads()
    restore_sigterm = _sigterm_as_interrupt()
    restore_malloc = _keep_buffers_in_heap()
    try:
        torch.set_num_threads(1)
        reader.open()
        if early is not None:
            early.stop()  # what it asked for so far is read through the page cache
        if os.environ.get("MECHA_PREFETCH", "1") != "0":
            reader.prefetcher = Prefetcher([i.path for i in plan.inputs], run.read_schedule(),
                                           pin_memory=reader.pin_memory, early=early)
        writer.prepare()
        run.loop()
        if run.nonfinite:
            raise run.nonfinite_failure()
        writer.commit()
    finally:
        if not writer.committed:
            writer.abort()
        pf = reader.prefetcher
        io_note = "" if pf is None else (
            f" read_wait_s={pf.wait_seconds:.3f} direct_reads={pf.direct_reads} "
            f"cached_reads={pf.buffered_reads} missed_reads={pf.missed}")
        reader.close()
        torch.set_num_threads(prev_threads)
        restore_sigterm()
        restore_malloc()

    seconds = time.perf_counter() - t0
    outputs = tuple(
        OutputStats(o.path, len(o.tensors), writer.data_start[i] + o.data_bytes)
        for i, o in enumerate(plan.outputs))
    stats = RunStats(outputs, seconds, peak_rss(), run.first_key_seconds, len(jobs),
                     reader.bytes_read, workers, str(dev))
    if os.environ.get("MECHA_BENCH_TIMING") == "1":
        first = stats.first_key_seconds
        print(f"mecha-timing first_key_s={first if first is not None else -1:.4f} "
              f"first_key_unix={run.first_key_unix or -1:.4f} total_s={seconds:.4f} "
              f"peak_rss_bytes={stats.peak_rss}{io_note} write_wait_s={writer.wait_seconds:.3f} "
              f"direct_written={writer.direct_bytes}", file=sys.stderr, flush=True)
    return stats


def peak_rss() -> int:
    """The process's peak resident set size in bytes."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss if sys.platform == "darwin" else rss * 1024


# ------------------------------------------------------------------------------------------------
# Scheduling


class _Job:
    """Every output's tensor for one key name."""

    __slots__ = ("key", "targets", "prog", "spans", "items_left", "nbytes", "streamed")

    def __init__(self, key: str, targets: list[tuple[int, OutTensor]]):
        self.key = key
        self.targets = targets
        self.prog: KeyProgram | None = None
        self.spans: list[tuple[int, int] | None] | None = None
        self.items_left = 0
        self.streamed = False  # one item, evaluated in slices with passes (run_streamed)
        self.nbytes = sum(t.nbytes for _, t in targets)


class _Run:
    def __init__(self, jobs: list[_Job], evaluator: Evaluator, writer: OutputWriter,
                 dev: torch.device, registry: MethodRegistry, cdtype: torch.dtype, workers: int,
                 budget: int, progress: Callable[[int, int], None] | None, t0: float,
                 cancel: threading.Event | None = None):
        self.jobs = jobs
        self.evaluator = evaluator
        self.writer = writer
        self.dev = dev
        self.registry = registry
        self.csize = torch.empty((), dtype=cdtype).element_size()
        self.step = SLICE_ELEMS if dev.type == "cpu" else GPU_SLICE_ELEMS
        self.workers = workers
        self.budget = MemoryBudget(budget)
        self.progress = progress
        self.t0 = t0
        self.cancel = cancel
        self.stop = False
        self.first_key_seconds: float | None = None
        self.first_key_unix: float | None = None
        self.nonfinite: list[tuple[str, str, object]] = []
        self._lock = threading.Lock()

    def cancelled(self) -> bool:
        return self.stop or (self.cancel is not None and self.cancel.is_set())

    # -- items --------------------------------------------------------------------------------------

    def _program(self, job: _Job) -> tuple[KeyProgram, list[tuple[int, int] | None]]:
        """The job's program and its items' spans (None: the whole key), made once."""
        if job.prog is None or job.spans is None:
            prog = job.prog = KeyProgram(job.key, [t for _, t in job.targets])
            n = numel(tuple(job.targets[0][1].shape))
            step = self.step
            if n > 2 * step and can_slice(prog, self.registry):
                job.spans = [(lo, min(lo + step, n)) for lo in range(0, n, step)]
            else:
                job.spans = [None]
                job.streamed = n > 2 * step and can_stream(prog, self.registry)
        return job.prog, job.spans

    def _items(self, job: _Job) -> list[tuple[_Job, tuple[int, int] | None, int]]:
        prog, spans = self._program(job)
        step = self.step
        job.items_left = len(spans)
        whole = None if spans == [None] and not job.streamed else step
        return [(job, s, item_estimate(prog, whole if s is None else s[1] - s[0], self.csize,
                                       self.registry)) for s in spans]

    def read_schedule(self) -> list[tuple[int, int, int]]:
        """(input, file offset, bytes) of every read the run will make, in the order the loop
        starts items and each item reads (`Evaluator.run` reads its program's Reads in order).
        A streamed job reads its tensors slice by slice in several passes (`run_streamed`): its
        reads are left to the reader, so that no chunk waits in the window for them."""
        inputs = self.evaluator.reader.inputs
        out = []
        for job in self._schedule():  # the order `loop` starts them in
            prog, spans = self._program(job)
            if job.streamed:
                continue
            reads = [n.expr for n in prog.nodes if isinstance(n.expr, Read)]
            for span in spans:
                for e in reads:
                    start = inputs[e.source].data_start + e.begin
                    if span is None:
                        out.append((e.source, start, e.end - e.begin))
                    else:
                        size = element_size(e.dtype)
                        out.append((e.source, start + span[0] * size,
                                    (span[1] - span[0]) * size))
        return out

    def _work(self, job: _Job, span: tuple[int, int] | None) -> int:
        ctx = torch.cuda.device(self.dev) if self.dev.type == "cuda" else contextlib.nullcontext()
        written = 0
        with ctx:
            if job.streamed:
                results = self.evaluator.run_streamed(job.prog, self.step, self.cancelled)
            else:
                results = _with_span(self.evaluator.run(job.prog, span, self.cancelled), span)
            for ti, tensor, finite, lo, hi in results:
                oi, ot = job.targets[ti]
                if finite is False:
                    self._note_nonfinite(job, oi, ot)
                if lo is None:
                    self.writer.write(oi, ot, tensor)
                else:
                    size = element_size(ot.dtype)
                    self.writer.write(oi, ot, tensor, lo * size, hi * size)
                written += tensor.numel() * tensor.element_size()
                del tensor
        return written

    def _note_nonfinite(self, job: _Job, oi: int, ot: OutTensor) -> None:
        with self._lock:
            path = self.writer.outputs[oi].path
            if any(k == job.key and p == path for k, p, _ in self.nonfinite):
                return
            if len(self.nonfinite) < MAX_NONFINITE:
                origin = ot.expr.origin if isinstance(ot.expr, Op) else None
                self.nonfinite.append((job.key, path, origin))
            if len(self.nonfinite) >= MAX_NONFINITE:
                self.stop = True

    def nonfinite_failure(self) -> RuntimeFailure:
        several_outputs = len(self.writer.outputs) > 1
        # in plan order, whatever order the threads found them in
        order = {job.key: i for i, job in enumerate(self.jobs)}
        self.nonfinite.sort(key=lambda n: (order.get(n[0], len(order)), n[1]))
        names = [repr(k) + (f" (in {p})" if several_outputs else "") for k, p, _ in self.nonfinite]
        count = (f"at least {len(names)}" if len(names) >= MAX_NONFINITE else str(len(names)))
        key, _, origin = self.nonfinite[0]
        return RuntimeFailure(
            f"non-finite values (NaN or inf) in {count} output tensor"
            f"{'' if len(names) == 1 else 's'}: {', '.join(names)}", key=key,
            origin=origin)  # type: ignore[arg-type]

    # -- the loop -----------------------------------------------------------------------------------

    def _schedule(self) -> list[_Job]:
        """The jobs in the order they are started: plan order, except that keys too large to slice
        which must be computed whole (a method that reduces over the tensor) start first, largest
        first. Started in plan order, the largest of them (an LLM's output head, the last key)
        would run alone at the end while the other threads wait; started first, the smaller keys
        fill in around them. Only when they are run is decided: the bytes written are the same."""
        step = SLICE_ELEMS if self.dev.type == "cpu" else GPU_SLICE_ELEMS
        whole = []
        for i, job in enumerate(self.jobs):
            n = numel(tuple(job.targets[0][1].shape))
            if n > 2 * step and not can_slice(KeyProgram(job.key, [t for _, t in job.targets]),
                                              self.registry):
                whole.append((-n, i))
        if not whole:
            return self.jobs
        first = {i for _, i in whole}
        return [self.jobs[i] for _, i in sorted(whole)] + [
            job for i, job in enumerate(self.jobs) if i not in first]

    def loop(self) -> None:
        pending_jobs = iter(self._schedule())
        ready: deque = deque()
        inflight: dict[Future, tuple[_Job, tuple[int, int] | None, int]] = {}
        max_items = 2 * self.workers
        failure: BaseException | None = None
        pool = ThreadPoolExecutor(self.workers, thread_name_prefix="mecha") \
            if self.workers > 1 else None
        try:
            while True:
                if self.cancel is not None and self.cancel.is_set() and failure is None:
                    failure = RunCancelled()
                    self.stop = True
                if self.stop:  # items stop reading: waiting for read-ahead would never end
                    self._stop_prefetch()
                while not self.stop and len(inflight) < max_items:
                    if not ready:
                        job = next(pending_jobs, None)
                        if job is None:
                            break
                        ready.extend(self._items(job))
                        continue
                    job, span, est = ready[0]
                    if not self.budget.admits(est, alone=not inflight):
                        break
                    ready.popleft()
                    self.budget.take(est)
                    fut = pool.submit(self._work, job, span) if pool else _run_now(
                        self._work, job, span)
                    inflight[fut] = (job, span, est)
                if not inflight:
                    break
                done, _ = wait(inflight, return_when=FIRST_COMPLETED)
                for fut in done:
                    job, span, est = inflight.pop(fut)
                    self.budget.give(est)
                    exc = fut.exception()
                    if exc is not None:
                        if not isinstance(exc, Cancelled) and failure is None:
                            failure = exc
                            self.stop = True
                        continue
                    self._finished(job, span, fut.result())
            if failure is not None:
                raise failure
        except BaseException:
            self.stop = True
            raise
        finally:
            if self.stop:
                self._stop_prefetch()
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)

    def _stop_prefetch(self) -> None:
        pf = self.evaluator.reader.prefetcher
        if pf is not None:
            pf.stop()

    def _finished(self, job: _Job, span: tuple[int, int] | None, written: int) -> None:
        job.items_left -= 1
        if self.progress is not None and span is not None and written:
            self.progress(0, written)
        if job.items_left == 0:
            if self.first_key_seconds is None:
                self.first_key_seconds = time.perf_counter() - self.t0
                self.first_key_unix = time.time()
            if self.progress is not None:  # counted in output tensors, like the totals
                self.progress(len(job.targets), 0 if span is not None else written)
            job.prog = None  # free the program


def _with_span(results: Iterator, span: tuple[int, int] | None) -> Iterator:
    """`Evaluator.run`'s results as (target, tensor, finite, first, end element), like
    `run_streamed`'s; None, None for whole tensors. Each result is released before the next is
    computed."""
    lo, hi = span if span is not None else (None, None)
    for item in results:
        yield (*item, lo, hi)
        del item


def _run_now(fn: Callable, *args) -> Future:
    """Run `fn` in this thread, as a completed future (the single-thread mode)."""
    fut: Future = Future()
    try:
        result = fn(*args)
    except BaseException as exc:  # KeyboardInterrupt included: it is re-raised by the loop
        fut.set_exception(exc)
    else:
        fut.set_result(result)
    return fut


# ------------------------------------------------------------------------------------------------
# Checks before starting


def _group(plan: Plan) -> list[_Job]:
    """Key jobs in order of first appearance (first output's order, then new keys of the next)."""
    jobs: dict[str, _Job] = {}
    for oi, out in enumerate(plan.outputs):
        for t in out.tensors:
            job = jobs.get(t.group or t.key)
            if job is None:
                jobs[t.group or t.key] = _Job(t.group or t.key, [(oi, t)])
            else:
                job.targets.append((oi, t))
                job.nbytes += t.nbytes
    return list(jobs.values())


def _io_memory(plan: Plan, writer: OutputWriter) -> int:
    """Memory the read-ahead and the direct writers may hold, taken from the items' budget."""
    reads = min(window_bytes(len(plan.inputs)), sum(i.size for i in plan.inputs))
    return reads + writer.direct_outputs() * DIRECT_MEMORY


def _check_paths(plan: Plan) -> None:
    inputs = [(os.path.realpath(i.path), i.path) for i in plan.inputs]
    seen: dict[str, str] = {}
    for out in plan.outputs:
        real = os.path.realpath(out.path)
        for in_real, in_path in inputs:
            same = real == in_real
            if not same and os.path.exists(out.path) and os.path.exists(in_path):
                try:
                    same = os.path.samefile(out.path, in_path)
                except OSError:
                    pass
            if same:
                raise RuntimeFailure(f"the output {out.path} is the input {in_path}: refusing to "
                                     f"overwrite a model that the merge reads", path=out.path)
        if real in seen:
            raise RuntimeFailure(f"two outputs write the same file {out.path}", path=out.path)
        seen[real] = out.path
    for f in plan.folders:  # a folder output replaces the whole folder: no input may be in it
        top = os.path.realpath(f.path) + os.sep
        for in_real, in_path in inputs:
            if in_real.startswith(top):
                raise RuntimeFailure(f"the output folder {f.path} holds the input {in_path}: "
                                     f"refusing to replace a folder that the merge reads",
                                     path=f.path)


def _validate(plan: Plan, registry: MethodRegistry) -> None:
    """Catch plan inconsistencies (a front-end bug, or a method missing from this registry)
    before any work: every read inside its file, sizes matching dtypes and shapes."""
    seen: set[int] = set()
    for out in plan.outputs:
        keys: set[str] = set()
        for t in out.tensors:
            if t.key in keys:
                raise RuntimeFailure(f"internal error: key {t.key!r} appears twice in {out.path}",
                                     key=t.key)
            keys.add(t.key)
            _check_size(t.key, t.dtype, t.shape, t.end - t.begin, f"output {out.path}")
            stack = [t.expr]
            while stack:
                e = stack.pop()
                if id(e) in seen:
                    continue
                seen.add(id(e))
                if isinstance(e, Read):
                    if not 0 <= e.source < len(plan.inputs):
                        raise RuntimeFailure(f"internal error: key {t.key!r} reads input "
                                             f"{e.source}, the plan has {len(plan.inputs)}",
                                             key=t.key)
                    inp = plan.inputs[e.source]
                    _check_size(e.key, e.dtype, e.shape, e.end - e.begin, f"input {inp.path}")
                    if e.begin < 0 or inp.data_start + e.end > inp.size:
                        raise RuntimeFailure(f"internal error: tensor {e.key!r} lies outside "
                                             f"{inp.path} ({inp.size} bytes)", key=e.key)
                elif isinstance(e, Op):
                    if e.op not in BUILTIN_OPS and e.op not in ENGINE_OPS and registry.get(e.op) is None:
                        raise RuntimeFailure(f"unknown merge method `{e.op}` (key {t.key!r})",
                                             key=t.key, origin=e.origin)
                    stack.extend(e.args)
                else:
                    raise RuntimeFailure(f"internal error: unknown plan node "
                                         f"{type(e).__name__} for key {t.key!r}", key=t.key)


def _check_size(key: str, dtype: str, shape: tuple[int, ...], nbytes: int, where: str) -> None:
    if dtype not in DTYPES:
        raise RuntimeFailure(f"tensor {key!r} in {where} has unknown dtype {dtype}", key=key)
    if dtype not in TORCH_DTYPES:
        raise RuntimeFailure(f"tensor {key!r} in {where} has dtype {dtype}, which this version of "
                             f"torch cannot handle", key=key)
    if any(d < 0 for d in shape) or numel(tuple(shape)) * element_size(dtype) != nbytes:
        raise RuntimeFailure(f"internal error: tensor {key!r} in {where}: {dtype} "
                             f"{list(shape)} does not fill {nbytes} bytes", key=key)


def _resolve_device(device: str) -> torch.device:
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError, TypeError):
        raise RuntimeFailure(f"unknown device {device!r} (expected cpu, cuda or cuda:N)") from None
    if dev.type == "cpu":
        return torch.device("cpu")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            why = "this torch was built without CUDA" if torch.version.cuda is None \
                else "no CUDA device was found"
            raise RuntimeFailure(f"cannot compute on {device}: {why}")
        count = torch.cuda.device_count()
        index = torch.cuda.current_device() if dev.index is None else dev.index
        if index >= count:
            raise RuntimeFailure(f"cannot compute on {device}: there "
                                 f"{'is 1 CUDA device' if count == 1 else f'are {count} CUDA devices'}")
        return torch.device("cuda", index)
    if dev.type == "mps":
        if not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
            raise RuntimeFailure(f"cannot compute on {device}: MPS is not available")
        return dev
    raise RuntimeFailure(f"unsupported device {device!r} (expected cpu, cuda or cuda:N)")


def _default_threads() -> int:
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return max(1, min(cores, 16))


def _default_budget() -> int:
    try:
        ram = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        ram = 8 << 30
    return max(1 << 30, min(ram // 8, 16 << 30))


def _keep_buffers_in_heap() -> Callable[[], None]:
    """With glibc, serve buffers up to 16 MiB from the heap and keep freed memory there while
    running: the same sizes are allocated over and over (one slice after another), and by default
    glibc maps and unmaps each large buffer, so every run would fault in its memory page by page
    again (about half the system time of a merge). Afterwards, glibc's defaults are restored and
    the free memory is handed back to the system."""
    if not sys.platform.startswith("linux"):
        return lambda: None
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        mallopt, malloc_trim = libc.mallopt, libc.malloc_trim
    except (OSError, AttributeError):
        return lambda: None
    m_trim_threshold, m_mmap_threshold = -1, -3
    if not (mallopt(m_mmap_threshold, 16 << 20) and mallopt(m_trim_threshold, 256 << 20)):
        return lambda: None

    def restore() -> None:
        mallopt(m_mmap_threshold, 128 << 10)
        mallopt(m_trim_threshold, 128 << 10)
        malloc_trim(0)

    return restore


def _sigterm_as_interrupt() -> Callable[[], None]:
    """While running, turn SIGTERM into KeyboardInterrupt so temporary files get removed.
    Only from the main thread, and only where nobody installed a handler of their own."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    try:
        if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
            return lambda: None

        def handler(signum, frame):
            raise KeyboardInterrupt

        signal.signal(signal.SIGTERM, handler)
    except (ValueError, OSError, AttributeError):
        return lambda: None
    return lambda: signal.signal(signal.SIGTERM, signal.SIG_DFL)


__all__ = ["execute", "RunStats", "OutputStats", "RuntimeFailure", "peak_rss", "format_bytes"]
