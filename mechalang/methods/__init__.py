"""Merge methods by family, and the registry that the checker and the engine share.

Method modules get torch as `from ._lazy import torch`: a module object that imports torch on first
attribute use, so registering methods (which the torch-free checker needs) costs nothing.
"""

from .registry import REGISTRY, Bool, Choice, Delta, Float, Int, KeyName, MethodSpec, Same, Weight, merge_method

__all__ = ["REGISTRY", "Bool", "Choice", "Delta", "Float", "Int", "KeyName", "MethodSpec", "Same",
           "Weight", "merge_method"]
