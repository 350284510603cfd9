"""What happens to each tensor: the per-tensor plan shared by both recipe formats.

A recipe (native or mergekit) turns tensor names into `TensorPlan`s; the executor and the
in-memory merger only ever see plans. `t` is always the weight of the adapted model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

METHODS = ("lerp", "slerp", "slerp_rowwise", "linear")


@dataclass(frozen=True)
class TensorPlan:
    """How one tensor is merged.

    `method` is a kernel name (`lerp`, `slerp`, `slerp_rowwise`) or `linear` (mergekit's weighted
    sum, with `weights = (w_base, w_adapted)` and `normalize`). `rule` names the recipe entry that
    decided it (`rules[2]`, `default`, `slices[0].parameters.t`), for the report.
    """

    t: float
    method: str
    rule: str = "default"
    weights: tuple[float, float] | None = None
    normalize: bool = True

    def copy_source(self) -> str | None:
        """`base` / `adapted` when the result is one input verbatim (copied, not computed)."""
        if self.method == "linear" and self.weights is not None:
            wb, wa = self.weights
            if self.normalize:
                if wa == 0 and wb != 0:
                    return "base"
                if wb == 0 and wa != 0:
                    return "adapted"
                return None
            if (wb, wa) == (1.0, 0.0):
                return "base"
            if (wb, wa) == (0.0, 1.0):
                return "adapted"
            return None
        if self.t == 0:
            return "base"
        if self.t == 1:
            return "adapted"
        return None


def gradient_value(anchors: Sequence[float], pos: float) -> float:
    """Value of a gradient (list of anchors spread evenly over [0, 1]) at `pos` in [0, 1].

    Piecewise-linear between neighbouring anchors — the same arithmetic as mergekit 0.1.5, so a
    gradient gives the same per-layer numbers in both formats: with n anchors, x = pos·(n − 1),
    i = ⌊x⌋, value = (1 − f)·anchors[i] + f·anchors[min(i + 1, n − 1)], f = x − i.
    """
    values = [float(v) for v in anchors]
    if len(values) == 1:
        return values[0]
    scaled = pos * (len(values) - 1)
    i0 = int(scaled)
    i1 = min(len(values) - 1, i0 + 1)
    frac = scaled - i0
    return (1 - frac) * values[i0] + frac * values[i1]


def layer_position(index: int, count: int) -> float:
    """Position in [0, 1] of the `index`-th of `count` selected layers, as mergekit places layers
    within a slice: evenly from 0 to 1, and 1 when a single layer is selected."""
    return index / (count - 1) if count > 1 else 1.0
