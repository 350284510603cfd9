"""What a merge method is: a kernel plus its parameters (names, ranges, defaults, docs).

The registry (`spear_mm.merge.methods`) holds one `MergeMethod` per name. Dispatch
(`merge.apply`), recipe validation (`merge.recipe`, `merge.mergekit_compat`) and the docs read
these entries, so a method is described once.

Kernel contract: `kernel(a, b, plan, call) -> (tensor, KernelStats)` where `a` is the base
tensor, `b` the adapted one (same shape, already cast to the recipe's compute dtype if any),
`plan` the tensor's `TensorPlan` and `call` a `KernelCall` (tensor name, output dtype, whether to
take statistics, whether to reproduce mergekit's rounding, an optional output buffer).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from spear_mm.merge.kernels import KernelStats
from spear_mm.merge.plan import TensorPlan


@dataclass(frozen=True)
class Param:
    """One method parameter.

    `lo`/`hi` bound its meaningful range (inclusive; None = unbounded). `extrapolates`: a value
    outside the range is an extrapolation beyond base or adapted, allowed only when the recipe
    sets `allow_extrapolation: true`; otherwise the range is absolute (a density of 1.3 means
    nothing). `kind`: float, int or bool. `formats`: the recipe formats that accept it
    (`native`, `mergekit`).
    """

    name: str
    default: Any
    doc: str
    lo: float | None = None
    hi: float | None = None
    kind: str = "float"
    extrapolates: bool = False
    formats: tuple[str, ...] = ("native", "mergekit")

    def check(self, value: Any, allow_extrapolation: bool = False) -> str | None:
        """None when `value` is acceptable, else the problem in words (no location)."""
        if self.kind == "bool":
            return None if isinstance(value, bool) else f"{self.name} must be true or false"
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"{self.name} must be a number, got {value!r}"
        if self.kind == "int" and float(value) != int(value):
            return f"{self.name} must be a whole number, got {value!r}"
        if value != value or value in (float("inf"), float("-inf")):
            return f"{self.name} must be finite, got {value!r}"
        inside = (self.lo is None or value >= self.lo) and (self.hi is None or value <= self.hi)
        if inside or (self.extrapolates and allow_extrapolation):
            return None
        span = f"[{_fmt(self.lo)}, {_fmt(self.hi)}]"
        fix = (
            "; set allow_extrapolation: true at the top of the recipe to go beyond it"
            if self.extrapolates
            else ""
        )
        return f"{self.name} = {value} is outside {span} ({self.doc}){fix}"


def _fmt(x: float | None) -> str:
    return "-inf" if x is None else f"{x:g}"


# The weight of the adapted model in every recipe; beyond [0, 1] only with allow_extrapolation.
T = Param("t", None, "0 = base, 1 = adapted", 0.0, 1.0, extrapolates=True)


@dataclass(frozen=True)
class KernelCall:
    """Per-call settings handed to a kernel (see the module doc)."""

    name: str
    out_dtype: torch.dtype | None
    stats: bool = True
    mergekit: bool = False
    out: torch.Tensor | None = None


Kernel = Callable[[torch.Tensor, torch.Tensor, TensorPlan, KernelCall], tuple[torch.Tensor, Any]]


def t_copy_source(plan: TensorPlan, mergekit: bool) -> str | None:
    """t = 0 is the base and t = 1 the adapted tensor, copied bit for bit."""
    if plan.t == 0:
        return "base"
    if plan.t == 1:
        return "adapted"
    return None


@dataclass(frozen=True)
class MergeMethod:
    """A registry entry. `native`: usable as `method:` in native recipes; `mergekit`: read as a
    mergekit `merge_method`. `params`: method parameters beside t (native `parameters:`,
    mergekit `parameters`). `copy_source(plan, mergekit)` says when the result is an input
    verbatim (then no kernel runs)."""

    name: str
    summary: str
    kernel: Kernel
    params: tuple[Param, ...] = ()
    native: bool = True
    mergekit: bool = False
    task_vector: bool = False
    reference: str | None = None
    copy_source: Callable[[TensorPlan, bool], str | None] = t_copy_source

    def param(self, name: str, fmt: str | None = None) -> Param | None:
        """The parameter `name` (accepted by format `fmt` when given), or None."""
        return next(
            (p for p in self.params if p.name == name and (fmt is None or fmt in p.formats)),
            None,
        )

    def param_names(self, fmt: str) -> list[str]:
        return [p.name for p in self.params if fmt in p.formats]

    def values(self, plan: TensorPlan) -> dict[str, Any]:
        """Every parameter's value for this tensor: the plan's, else the default."""
        given = dict(plan.params)
        return {p.name: given.get(p.name, p.default) for p in self.params}


__all__ = ["T", "KernelCall", "KernelStats", "MergeMethod", "Param", "t_copy_source"]
