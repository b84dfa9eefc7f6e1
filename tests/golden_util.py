"""The golden-file comparison shared by the golden test runners."""

from __future__ import annotations

import os
from pathlib import Path


def assert_matches_golden(got: str, expected_file: Path) -> None:
    """`got` must equal `expected_file`; with MECHA_UPDATE_GOLDEN=1 the file is rewritten instead
    (then read the diff: every change must be one you mean)."""
    if os.environ.get("MECHA_UPDATE_GOLDEN") == "1":
        expected_file.write_text(got, encoding="utf-8", newline="\n")
        return
    assert expected_file.exists(), f"no golden output {expected_file}; run with MECHA_UPDATE_GOLDEN=1"
    assert got == expected_file.read_text(encoding="utf-8")
