"""Room to recurse: passes that walk a recipe's structure (evaluating nested templates, modules
importing modules) run in a thread with a large stack and a high recursion limit, so a deep but
legitimate recipe checks instead of ending in RecursionError. The language's own limits (brackets
in the parser, template nesting and evaluation budgets in the checker) are far below what this
allows, and each is reported as a diagnostic with its number."""

from __future__ import annotations

import sys
import threading
from typing import Any, Callable, TypeVar

T = TypeVar("T")

STACK_BYTES = 512 * 1024 * 1024  # address space reserved for the thread, committed only as used
RECURSION_LIMIT = 250_000

_lock = threading.Lock()
_active = 0
_saved_limit = 0


def call_deep(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """`fn(*args, **kwargs)`, run in a thread with a large stack; its result or its exception."""
    global _active, _saved_limit
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn(*args, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller as is
            box["error"] = exc

    with _lock:
        if _active == 0:
            _saved_limit = sys.getrecursionlimit()
            sys.setrecursionlimit(max(_saved_limit, RECURSION_LIMIT))
        _active += 1
        previous = threading.stack_size(STACK_BYTES)
        try:
            worker = threading.Thread(target=target, name="mecha-deep", daemon=True)
            worker.start()
        finally:
            threading.stack_size(previous)
    try:
        worker.join()
    finally:
        with _lock:
            _active -= 1
            if _active == 0:
                sys.setrecursionlimit(_saved_limit)
    if "error" in box:
        raise box["error"]
    return box["value"]
