"""`mecha explain-code E0401`: what a diagnostic code means, at length."""

from __future__ import annotations

import sys

from ..diagnostics import codes, error
from ..diagnostics.explanations import EXPLANATIONS
from .output import fail


def explain_code_text(code: codes.Code) -> str:
    return f"{code.id} ({code.name}, {code.severity}): {code.summary}\n\n{EXPLANATIONS[code.id].strip()}\n"


def explain_code_command(code: str | None, *, format: str = "text") -> int:
    if code is None:  # the list of every code
        for c in codes.CODES.all():
            sys.stdout.write(f"{c.id}  {c.name:<32} {c.summary}\n")
        return 0
    found = codes.CODES.get(code)
    if found is None:
        return fail([error(codes.UNKNOWN_CODE, f"no diagnostic code `{code}`", None,
                           help="`mecha explain-code` with no argument lists every code")], None, format)
    sys.stdout.write(explain_code_text(found))
    return 0
