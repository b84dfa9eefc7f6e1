"""mechalang: a typed recipe language for merging neural-network checkpoints."""

__version__ = "0.1.0"


def __getattr__(name: str):
    # `from mechalang import merge_method` without importing the registry (or torch) eagerly.
    if name in ("merge_method", "Weight", "Delta", "Same", "Float", "Int", "Bool", "Choice", "KeyName"):
        from . import methods

        return getattr(methods, name)
    raise AttributeError(name)
