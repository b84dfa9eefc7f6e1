"""Progress reporting for a run: a rich bar on a terminal, log lines otherwise, or nothing.

    with make_progress(total_keys, total_bytes) as bar:
        execute(plan, progress=bar.advance)

`advance(keys, nbytes)` adds to the counts (the executor calls it from one thread; it is also
safe from several). On a terminal the bar shows keys, bytes, throughput and time left; when
stderr is not a terminal (a log file, CI) a plain line is printed every few seconds and at the end.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import TextIO

from ..units import format_bytes


def make_progress(total_keys: int, total_bytes: int, *, enabled: bool = True,
                  stream: TextIO | None = None, description: str = "merging",
                  interval: float = 5.0) -> "Progress":
    if not enabled:
        return Progress(total_keys, total_bytes)
    stream = stream if stream is not None else sys.stderr
    try:
        tty = stream.isatty()
    except (AttributeError, ValueError):
        tty = False
    if tty:
        return RichProgress(total_keys, total_bytes, stream, description)
    return LogProgress(total_keys, total_bytes, stream, description, interval)


class Progress:
    """Counts, and shows nothing (the disabled bar; the base of the others)."""

    def __init__(self, total_keys: int, total_bytes: int):
        self.total_keys = total_keys
        self.total_bytes = total_bytes
        self.keys = 0
        self.bytes = 0
        self.failed = False  # set by the caller when the run failed: no "done" line then
        self.started = time.perf_counter()
        self._lock = threading.Lock()

    def advance(self, keys: int = 0, nbytes: int = 0) -> None:
        with self._lock:
            self.keys += keys
            self.bytes += nbytes
        self._update()

    def _update(self) -> None:
        pass

    def __enter__(self) -> "Progress":
        self.started = time.perf_counter()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        pass


class LogProgress(Progress):
    def __init__(self, total_keys: int, total_bytes: int, stream: TextIO, description: str,
                 interval: float):
        super().__init__(total_keys, total_bytes)
        self.stream = stream
        self.description = description
        self.interval = interval
        self._last = 0.0

    def __enter__(self) -> "LogProgress":
        super().__enter__()
        self._last = self.started
        return self

    def _update(self) -> None:
        now = time.perf_counter()
        if now - self._last >= self.interval:
            self._last = now
            self._line(now)

    def _line(self, now: float) -> None:
        elapsed = max(now - self.started, 1e-9)
        rate = self.bytes / elapsed
        text = (f"mecha: {self.description}: {self.keys}/{self.total_keys} keys, "
                f"{format_bytes(self.bytes)} of {format_bytes(self.total_bytes)}, "
                f"{rate / 1e6:.1f} MB/s")
        if rate > 0 and self.bytes < self.total_bytes:
            text += f", about {_duration((self.total_bytes - self.bytes) / rate)} left"
        self._write(text)

    def _write(self, text: str) -> None:
        try:
            print(text, file=self.stream, flush=True)
        except (OSError, ValueError):
            pass

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None and not self.failed:
            elapsed = max(time.perf_counter() - self.started, 1e-9)
            self._write(f"mecha: {self.description}: done, {self.keys} keys, "
                        f"{format_bytes(self.bytes)} in {_duration(elapsed)} "
                        f"({self.bytes / elapsed / 1e6:.1f} MB/s)")


class RichProgress(Progress):
    def __init__(self, total_keys: int, total_bytes: int, stream: TextIO, description: str):
        super().__init__(total_keys, total_bytes)
        from rich.console import Console
        from rich.progress import BarColumn, DownloadColumn, TextColumn, TimeRemainingColumn, TransferSpeedColumn
        from rich.progress import Progress as Bar

        self._bar = Bar(TextColumn("{task.description}"), BarColumn(),
                        TextColumn("{task.fields[keys]}/{task.fields[total_keys]} keys"),
                        DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn(),
                        console=Console(file=stream), transient=False)
        self._task = self._bar.add_task(description, total=max(total_bytes, 1), keys=0,
                                        total_keys=total_keys, start=False)

    def __enter__(self) -> "RichProgress":
        super().__enter__()
        self._bar.start()
        self._bar.start_task(self._task)
        return self

    def _update(self) -> None:
        self._bar.update(self._task, completed=self.bytes, keys=self.keys)

    def __exit__(self, exc_type, exc, tb) -> None:
        self._update()
        self._bar.stop()


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"
