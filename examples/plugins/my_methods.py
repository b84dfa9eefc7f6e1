"""An example plugin: a merge method defined outside mechalang.

    mecha run examples/plugin.mecha --plugin examples/plugins/my_methods.py
    mecha info --methods --plugin examples/plugins/my_methods.py

The decorator declares the signature the checker uses: `a` and `b` are models in one space
(`Same`: both weights or both deltas), `alpha` a hyperparameter in [0, 1] that recipes may give per
block. The body runs once per tensor key, on float tensors.
"""

from mechalang import Float, Same, merge_method


@merge_method(formula="a + α·|b − a|·(b − a)", family="example")
def squared_pull(a: Same, b: Same, *, alpha: Float(0.0, 1.0) = 0.5) -> Same:
    """Move `a` toward `b`, more where they differ more (the step grows with |b − a|)."""
    d = b - a
    return a + alpha * d.abs() * d
