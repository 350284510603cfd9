"""mergekit's `linear` method for two models: (w_base·base + w_adapted·adapted) / (w_base + w_adapted).

Read from mergekit YAML only (native recipes say `lerp`); weights come per model
(`TensorPlan.weights`), `normalize` (default true) divides by their sum.
"""

from __future__ import annotations

from spear_mm.merge import kernels
from spear_mm.merge.methods.base import KernelCall, MergeMethod, Param
from spear_mm.merge.plan import TensorPlan


def _linear(a, b, plan: TensorPlan, call: KernelCall):
    wb, wa = plan.weights or (1.0 - plan.t, plan.t)
    return kernels.linear(
        a, b, wb, wa, normalize=plan.normalize, out_dtype=call.out_dtype, out=call.out
    )


def linear_copy_source(plan: TensorPlan, mergekit: bool) -> str | None:
    """One weight zero (normalised), or weights (1, 0) / (0, 1): the result is one input."""
    if plan.weights is None:
        return "base" if plan.t == 0 else "adapted" if plan.t == 1 else None
    wb, wa = plan.weights
    if plan.normalize:
        if wa == 0 and wb != 0:
            return "base"
        if wb == 0 and wa != 0:
            return "adapted"
        return None
    return {(1.0, 0.0): "base", (0.0, 1.0): "adapted"}.get((wb, wa))


LINEAR = MergeMethod(
    "linear",
    "mergekit's weighted sum of the two models (native recipes: use lerp)",
    _linear,
    params=(
        Param("weight", None, "a model's weight; 0 = not used", lo=0.0, extrapolates=True),
        Param("normalize", True, "divide by the sum of the weights", kind="bool"),
    ),
    native=False,
    mergekit=True,
    copy_source=linear_copy_source,
)
