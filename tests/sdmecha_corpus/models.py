"""The small models the sd-mecha corpus names (`a` … `d`, `xl`, `xl2`, and `lora_a`, a kohya LoRA of
`a`), written with the tests' own generator so the corpus's expected values match the test run.

    python -m tests.sdmecha_corpus.models DIR
"""

from __future__ import annotations

import sys
from pathlib import Path


def write_corpus_models(folder: Path) -> Path:
    from mechalang.synth import make_lora

    from ..conftest import write_small_models

    write_small_models(folder)
    lora = folder / "lora_a.safetensors"
    if not lora.exists():
        make_lora(folder / "a.safetensors", lora, rank=2, seed=7, scale=0.1)
    return folder


if __name__ == "__main__":
    write_corpus_models(Path(sys.argv[1]))
