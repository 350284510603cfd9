"""Shared shape of the task-vector methods: merged = base + λ·combine(w·S(Δ)), Δ = adapted − base.

Each method file gives its sparsifier S (trim, drop, low-rank) and its defaults; this module turns
that into a registry entry whose kernel runs `spear_mm.merge.taskvector.task_vector_merge`.

Two readings of the same formula:
- **native recipes**: λ is the tensor's `t` (0 = base, 1 = base + S(Δ)), w = 1, no division;
  compute in fp32 (fp64 for fp64 inputs), one rounding to the output dtype. `freeze`/`keep` copy.
- **mergekit recipes**: w = the adapted model's `weight`, λ = `lambda`, `normalize` divides by
  the kept weight; arithmetic in the recipe's `dtype` with mergekit's operation order, so the
  tensors are mergekit's (tests/merge/test_mergekit_crosscheck.py). Nothing is copied.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from spear_mm.merge.kernels import KernelStats, compute_dtype
from spear_mm.merge.methods.base import KernelCall, MergeMethod, Param
from spear_mm.merge.plan import TensorPlan
from spear_mm.merge.taskvector import task_vector_merge

MK = ("mergekit",)
Sparsifier = Callable[[torch.Tensor, dict, KernelCall], tuple[torch.Tensor, dict]]

DENSITY = Param("density", 1.0, "fraction of the task vector's entries kept", 0.0, 1.0)
GAMMA = Param("gamma", 0.01, "fraction of the largest |Δ| entries dropped", 0.0, 1.0)
SEED = Param("seed", 0, "DARE mask seed, mixed with each tensor's name", 0.0, kind="int")
WEIGHT = Param(
    "weight", None, "the adapted model's weight w", 0.0, 1.0, extrapolates=True, formats=MK
)
LAMBDA = Param(
    "lambda", 1.0, "scale λ of the merged task vector", 0.0, 1.0, extrapolates=True, formats=MK
)
INT8_MASK = Param("int8_mask", False, "mergekit memory option (no effect)", kind="bool", formats=MK)


def rescale_param(default: bool) -> Param:
    return Param("rescale", default, "rescale kept entries to Δ's L1 norm", kind="bool")


def normalize_param(default: bool) -> Param:
    return Param("normalize", default, "divide by the kept weight", kind="bool", formats=MK)


def task_vector_copy_source(plan: TensorPlan, mergekit: bool) -> str | None:
    """Native: t = 0 is the base; t = 1 with nothing trimmed (no method parameters) is the
    adapted tensor. mergekit recipes always compute, as mergekit does."""
    if mergekit:
        return None
    if plan.t == 0:
        return "base"
    return "adapted" if plan.t == 1 and not plan.params else None


def task_vector_method(
    name: str,
    summary: str,
    sparsify: Sparsifier | None,
    params: tuple[Param, ...],
    *,
    consensus: bool,
    normalize: bool,
    mergekit: bool = True,
    reference: str | None = None,
) -> MergeMethod:
    """A registry entry for a task-vector method (see the module doc)."""
    common = (WEIGHT, LAMBDA, normalize_param(normalize), INT8_MASK) if mergekit else ()
    holder: list[MergeMethod] = []

    def kernel(a, b, plan: TensorPlan, call: KernelCall):
        values = holder[0].values(plan)
        dtype = a.dtype if call.mergekit else compute_dtype(a, b)
        x, y = a.to(dtype), b.to(dtype)
        delta, extra = (y - x, {}) if sparsify is None else sparsify(y - x, values, call)
        if call.mergekit:
            w, lam, norm = float(values["weight"]), float(values["lambda"]), values["normalize"]
        else:  # one task vector, w = 1: sign election keeps every entry (d·mask = d), skip it
            w, lam, norm = 1.0, plan.t, False
        merged = task_vector_merge(
            x,
            y,
            delta=delta,
            weight=w,
            lam=lam,
            consensus=consensus and call.mergekit,
            normalize=norm,
        )
        want = call.out_dtype or dtype
        out = call.out.copy_(merged) if call.out is not None else merged.to(want)
        return out, KernelStats(name, extra=extra or None)

    method = MergeMethod(
        name,
        summary,
        kernel,
        params=params + common,
        mergekit=mergekit,
        task_vector=True,
        reference=reference,
        copy_source=task_vector_copy_source,
    )
    holder.append(method)
    return method


def kept_fraction(mask: torch.Tensor | None) -> dict:
    """Report field: the fraction of Δ's entries a mask kept."""
    if mask is None:
        return {}
    n = mask.numel()
    return {"kept": round(float(mask.count_nonzero()) / n, 6) if n else 0.0}
