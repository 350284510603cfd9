"""Merge one tensor pair according to its plan: copy or kernel, vocabulary growth, dtypes, checks.

Shared by the streaming executor and the in-memory merger so both give identical tensors.

Vocabulary growth: when CPT added tokens, the adapted embedding (and an untied lm_head) has more
rows than the base. The rows both models share are merged like any tensor; the new rows have no
base value, so they are the adapted rows whatever t is (freeze included). Nothing is truncated.
A base with *more* rows, or any other shape difference, is an error.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from spear_mm.errors import UserError
from spear_mm.io.checkpoint import dtype_name
from spear_mm.merge import methods
from spear_mm.merge.plan import TensorPlan

VOCAB_KINDS = ("embed", "lm_head")


@dataclass(frozen=True)
class DtypePolicy:
    """How inputs and outputs are typed. `compute`: cast inputs to it first (mergekit `dtype`);
    `round_to_compute`: round the result to the compute dtype before `out`; `out`: output dtype
    (None: the adapted tensor's, or the compute dtype under mergekit rounding)."""

    out: torch.dtype | None = None
    compute: torch.dtype | None = None
    round_to_compute: bool = False

    def resolve(self, base: torch.dtype, adapted: torch.dtype):
        compute = self.compute or (base if self.round_to_compute else None)
        out = self.out or (compute if self.round_to_compute else adapted)
        return compute, out


def new_rows(name: str, kind: str, base_shape, adapted_shape) -> int:
    """Rows added by vocabulary growth (0 when shapes match); UserError for any other mismatch."""
    base_shape, adapted_shape = tuple(base_shape), tuple(adapted_shape)
    if base_shape == adapted_shape:
        return 0
    grown = (
        kind in VOCAB_KINDS
        and len(base_shape) == len(adapted_shape) >= 1
        and base_shape[1:] == adapted_shape[1:]
        and adapted_shape[0] > base_shape[0]
    )
    if not grown:
        raise UserError(
            f"tensor {name}: shape {list(base_shape)} in base vs {list(adapted_shape)} in adapted; "
            "only a vocabulary that grew (more embedding / lm_head rows in adapted) can differ"
        )
    return adapted_shape[0] - base_shape[0]


def all_finite(x: torch.Tensor) -> bool:
    """True when x has no NaN/Inf; min/max propagate NaN and are ~30x faster than isfinite."""
    if x.numel() == 0:
        return True
    lo, hi = torch.aminmax(x)
    return bool(torch.isfinite(lo)) and bool(torch.isfinite(hi))


def merge_tensor(
    name: str,
    kind: str,
    base: torch.Tensor,
    adapted: torch.Tensor,
    plan: TensorPlan,
    policy: DtypePolicy,
    *,
    device: str | torch.device = "cpu",
    stats: bool = True,
    alloc: Callable[[tuple, torch.dtype], torch.Tensor] | None = None,
) -> tuple[torch.Tensor, dict]:
    """(merged CPU tensor, report entry) for one tensor.

    `alloc(shape, dtype)`, when given, supplies the kernel's output buffer on the CPU (the
    streaming executor recycles buffers; a fresh page costs a fault and a zeroing).

    t = 0 / t = 1 (and their mergekit `linear` equivalents) copy the base / adapted tensor
    bit for bit (cast only if the output dtype differs). A non-finite result (merged or copied)
    is a UserError naming the tensor.
    """
    entry: dict = {"t": plan.t, "method": plan.method, "rule": plan.rule}
    if plan.weights is not None:
        entry["weights"] = list(plan.weights)
    if plan.params:
        entry["params"] = dict(plan.params)
    method = methods.get(plan.method)
    compute, out = policy.resolve(base.dtype, adapted.dtype)
    if not (base.is_floating_point() and adapted.is_floating_point()):
        entry.update(path="copy", source="adapted", dtype=dtype_name(adapted.dtype))
        return adapted, entry
    extra = new_rows(name, kind, base.shape, adapted.shape)
    shared = adapted[: base.shape[0]] if extra else adapted
    source = method.copy_source(plan, policy.round_to_compute)
    entry["dtype"] = dtype_name(out)
    if extra:
        entry["new_rows"] = extra
    if source is not None:
        picked = base if source == "base" else shared
        merged = picked.to(compute).to(out) if compute is not None else picked.to(out)
        entry.update(path="copy", source=source)
        if not all_finite(merged):  # a copied NaN/Inf is as broken as a computed one
            raise UserError(
                f"tensor {name}: the {source} checkpoint's values contain NaN or Inf in "
                f"{dtype_name(out)} (copied at t={plan.t}); fix that checkpoint or pick an "
                "output dtype that holds its range"
            )
    else:
        a, b = base.to(device), shared.to(device)
        if compute is not None:
            a, b = a.to(compute), b.to(compute)
        kernel_out = compute if policy.round_to_compute else out
        buf = None
        if alloc is not None and a.device.type == "cpu" and kernel_out == out:
            buf = alloc(tuple(a.shape), out)
        call = methods.KernelCall(name, kernel_out, stats, policy.round_to_compute, buf)
        merged, st = method.kernel(a, b, plan, call)
        merged = merged.to(out).cpu()
        entry.update(path=st.path, cos=st.cos)
        if st.fallback:
            entry["fallback"] = True
        if st.max_angle is not None:
            entry["max_angle"] = st.max_angle
        entry.update(st.extra or {})
        if not all_finite(merged):
            raise UserError(
                f"tensor {name}: the merged values contain NaN or Inf (t={plan.t}, "
                f"method {plan.method}); check the inputs and the recipe's weights"
            )
    if extra:
        grown = adapted[base.shape[0] :].to(out)
        if not all_finite(grown):
            raise UserError(
                f"tensor {name}: the adapted checkpoint's new vocabulary rows contain NaN or "
                "Inf; fix or re-export that checkpoint"
            )
        merged = torch.cat([merged, grown], dim=0)
    return merged, entry
