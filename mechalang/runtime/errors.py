"""The one exception the streaming backend raises for problems a user can act on.

`RuntimeFailure` carries the tensor key being computed and the recipe span of the node that failed
(when known), so the command line can point at the recipe line, rustc-style, like any diagnostic.
Torch-free: the CLI may import it without loading the engine.
"""

from __future__ import annotations

from ..diagnostics import Span


class RuntimeFailure(Exception):
    """A run that cannot complete: bad input file, full disk, failing method, non-finite output...

    `message` is a complete sentence fragment for the user; `key` the tensor key involved (or
    None); `origin` the recipe span of the failing node (or None); `path` the file involved.
    """

    def __init__(self, message: str, *, key: str | None = None, origin: Span | None = None,
                 path: str | None = None):
        super().__init__(message)
        self.message = message
        self.key = key
        self.origin = origin
        self.path = path

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, key={self.key!r}, origin={self.origin!r})"


class RunCancelled(RuntimeFailure):
    """The run was stopped through its `cancel` event; nothing was written."""

    def __init__(self) -> None:
        super().__init__("the run was cancelled")
