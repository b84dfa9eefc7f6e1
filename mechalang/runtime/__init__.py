"""The streaming backend: executes a key plan (`plan.py`, torch-free) with torch.

Only `executor`, `ops`, `reader` and `writer` import torch; `plan` and `errors` are torch-free and
safe for the front end to import.
"""
