"""The interpolation methods: `lerp`, `slerp` (whole tensor, mergekit semantics), `slerp_rowwise`.

t is the weight of the adapted tensor; the kernels live in `spear_mm.merge.kernels` (docs/merge.md
explains when each one differs from the others on a CPT pair).
"""

from __future__ import annotations

from spear_mm.merge import kernels
from spear_mm.merge.methods.base import KernelCall, MergeMethod


def _lerp(a, b, plan, call: KernelCall):
    return kernels.lerp(a, b, plan.t, stats=call.stats, out_dtype=call.out_dtype, out=call.out)


def _slerp(a, b, plan, call: KernelCall):
    return kernels.slerp(
        a, b, plan.t, mergekit_rounding=call.mergekit, out_dtype=call.out_dtype, out=call.out
    )


def _slerp_rowwise(a, b, plan, call: KernelCall):
    return kernels.slerp_rowwise(a, b, plan.t, out_dtype=call.out_dtype, out=call.out)


LERP = MergeMethod("lerp", "(1 − t)·base + t·adapted (WiSE-FT); the fastest", _lerp)
SLERP = MergeMethod(
    "slerp",
    "whole-tensor SLERP with mergekit's LERP fallback above |cos| 0.9995",
    _slerp,
    mergekit=True,
    reference="https://github.com/arcee-ai/mergekit",
)
SLERP_ROWWISE = MergeMethod(
    "slerp_rowwise", "SLERP per row of dim 0, stable angle, no fallback", _slerp_rowwise
)
