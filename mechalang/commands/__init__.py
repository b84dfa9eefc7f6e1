"""What each `mecha` command does: thin shells over `mechalang.pipeline` that turn flags into
pipeline options and results into text (or JSON) and an exit code.

Exit codes: 0 done; 1 the recipe, the models or the run had a problem (diagnostics say which);
2 the command line itself was wrong; 130 interrupted.
"""
