"""The merge the web page started: one at a time, run by `pipeline.plan` and `pipeline.execute` in a
thread of its own (never on the server's event loop), counted by the progress callback and
stopped by the pipeline's cancel event (nothing is written then).
"""

from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..diagnostics import render_text
from ..units import format_bytes

_ids = itertools.count(1)


@dataclass
class Job:
    program: Any                    # a checked pipeline.Program
    overwrite: bool = False
    id: int = field(default_factory=lambda: next(_ids))
    state: str = "planning"         # planning, running, done, cancelled, failed
    keys: int = 0
    nbytes: int = 0
    total_keys: int = 0
    total_bytes: int = 0
    started: float = field(default_factory=time.perf_counter)
    ended: float | None = None
    writing: float | None = None    # when execution began (after planning): what MB/s is measured from
    lines: list[str] = field(default_factory=list)   # the summary, or what went wrong
    outputs: list[str] = field(default_factory=list)  # file names written
    cancel: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def finished(self) -> bool:
        return self.state in ("done", "cancelled", "failed")

    def progress(self, tensors: int, nbytes: int) -> None:
        with self._lock:
            self.keys += tensors
            self.nbytes += nbytes

    def snapshot(self) -> dict:
        """What the page shows: counts, percent, MB/s and time left."""
        with self._lock:
            keys, nbytes = self.keys, self.nbytes
        now = self.ended or time.perf_counter()
        elapsed = max(now - self.started, 1e-6)
        rate = nbytes / max(now - self.writing, 1e-6) if self.writing is not None else 0.0
        left = (self.total_bytes - nbytes) / rate if rate > 0 and not self.finished else None
        percent = 100.0 if self.state == "done" else (100.0 * nbytes / self.total_bytes if self.total_bytes else 0.0)
        return {"id": self.id, "state": self.state, "keys": keys, "total_keys": self.total_keys,
                "bytes": nbytes, "total_bytes": self.total_bytes, "percent": round(percent, 1),
                "mb_per_s": round(rate / 1e6, 2), "seconds_left": None if left is None else round(left, 1),
                "elapsed": round(elapsed, 2), "cancelling": self.cancel.is_set() and not self.finished,
                "lines": list(self.lines), "outputs": list(self.outputs)}

    def run(self) -> None:
        """In the job's thread: plan, then execute (torch is imported here, by the pipeline)."""
        from .. import pipeline

        try:
            planned = pipeline.plan(self.program)
            if not planned.ok:
                self._failed(planned.diagnostics, planned.sources)
                return
            self.total_keys, self.total_bytes = planned.total_keys, planned.total_bytes
            self.writing = time.perf_counter()
            self.state = "running"
            result = pipeline.execute(planned, overwrite=self.overwrite, progress=self.progress, cancel=self.cancel)
        except Exception as exc:  # a bug of ours: shown on the page, the server keeps serving
            self.lines = [f"internal error: {type(exc).__name__}: {exc}"]
            self.state, self.ended = "failed", time.perf_counter()
            return
        if result.ok:
            elapsed = time.perf_counter() - self.started
            writing = time.perf_counter() - (self.writing or self.started)
            self.outputs = [Path(o.path).name for o in planned.plan.outputs]
            self.lines = [f"wrote {Path(o.path).name}: {len(o.tensors)} tensors, {format_bytes(o.data_bytes)}"
                          for o in planned.plan.outputs]
            peak = result.stats.peak_rss if result.stats else None
            self.lines.append(f"done in {elapsed:.1f} s ({self.nbytes / max(writing, 1e-6) / 1e6:.1f} MB/s written)"
                              + (f", peak memory {format_bytes(peak)}" if peak else ""))
            self.state = "done"
        elif result.interrupted:
            self.lines = ["cancelled: no output was written"]
            self.state = "cancelled"
        else:
            self._failed(result.diagnostics, planned.sources)
            return
        self.ended = time.perf_counter()

    def _failed(self, diagnostics, sources) -> None:
        errors = [d for d in diagnostics if d.is_error]
        self.lines = render_text(errors, sources).rstrip().splitlines()
        self.state, self.ended = "failed", time.perf_counter()


class Runner:
    """At most one merge at a time: a second start is refused while one runs, with a message."""

    def __init__(self) -> None:
        self.current: Job | None = None
        self._lock = threading.Lock()

    @property
    def busy(self) -> bool:
        return self.current is not None and not self.current.finished

    def start(self, program, *, overwrite: bool = False) -> Job | None:
        """The started job, or None when one is already running."""
        with self._lock:
            if self.busy:
                return None
            job = Job(program, overwrite=overwrite)
            self.current = job
        threading.Thread(target=job.run, name=f"mecha-ui-merge-{job.id}", daemon=True).start()
        return job

    def get(self, job_id: int) -> Job | None:
        job = self.current
        return job if job is not None and job.id == job_id else None
