"""`python -m mechalang` is `mecha`."""

from .cli import main

main()
