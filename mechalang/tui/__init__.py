"""`mecha tui`: the quick-merge form of GUI mergers (InvokeAI's), in the terminal, on Textual.

The form only builds recipe text (`form.py`) and calls the pipeline: checking and running are the
same code as `mecha check` and `mecha run`. Nothing here imports torch before a merge starts.
"""

from __future__ import annotations


def run_tui(models_dir: str | None = None) -> int:
    """Open the form; the exit code when it closes."""
    from .app import MergeApp

    app = MergeApp(models_dir=models_dir)
    app.run()
    return app.return_code or 0
