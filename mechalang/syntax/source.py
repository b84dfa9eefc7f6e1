"""Reading a recipe file into text, or into diagnostics saying why it cannot be read: missing,
a folder, unreadable, not UTF-8, or binary. Never raises on bad input."""

from __future__ import annotations

import os
import stat

from ..diagnostics import Diagnostic, Span, codes, error


def read_source(path: str) -> tuple[str | None, list[Diagnostic]]:
    """The text of a recipe file, or diagnostics saying why it cannot be read."""
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None, [error(codes.SOURCE_NOT_FOUND, f"no such file: `{path}`")]
    except PermissionError:
        return None, [error(codes.SOURCE_UNREADABLE, f"cannot read `{path}`: permission denied")]
    except (OSError, ValueError) as e:  # ValueError: a path with a NUL character
        return None, [error(codes.SOURCE_UNREADABLE, f"cannot read `{path}`: {getattr(e, 'strerror', None) or e}")]
    if stat.S_ISDIR(st.st_mode):
        return None, [error(codes.SOURCE_IS_DIRECTORY, f"`{path}` is a directory, not a recipe file",
                            help="pass the path of a `.mecha` file")]
    if not stat.S_ISREG(st.st_mode):
        return None, [error(codes.SOURCE_NOT_REGULAR, f"`{path}` is not a regular file")]
    try:
        with open(path, "rb") as f:
            data = f.read()
    except PermissionError:
        return None, [error(codes.SOURCE_UNREADABLE, f"cannot read `{path}`: permission denied")]
    except OSError as e:
        return None, [error(codes.SOURCE_UNREADABLE, f"cannot read `{path}`: {e.strerror or e}")]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line, col = _byte_position(data, e.start)
        bad = data[e.start:e.start + 1].hex()
        return None, [error(
            codes.SOURCE_NOT_UTF8, f"`{path}` is not valid UTF-8: invalid byte 0x{bad} at {line}:{col}",
            Span(path, line, col, line, col + 1), label="invalid UTF-8 here",
            help="recipes are UTF-8 text; re-save the file as UTF-8")]
    if text.startswith("\ufeff"):
        text = text[1:]
    nul = text.find("\x00")
    if nul >= 0:
        line = text.count("\n", 0, nul) + 1
        col = nul - (text.rfind("\n", 0, nul) + 1) + 1
        return None, [error(
            codes.SOURCE_HAS_NUL, f"`{path}` contains a NUL byte at {line}:{col}; is it a binary file?",
            Span(path, line, col, line, col + 1), label="NUL byte",
            help="`mecha` reads recipe text; pass a `.mecha` file")]
    return text, []


def _byte_position(data: bytes, offset: int) -> tuple[int, int]:
    """1-based line and column (in characters) of the byte at `offset` of UTF-8 `data`."""
    line_start = data.rfind(b"\n", 0, offset) + 1
    line = data.count(b"\n", 0, offset) + 1
    prefix = data[line_start:offset].decode("utf-8", errors="replace")
    return line, len(prefix) + 1
