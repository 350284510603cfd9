"""What happens to each tensor: the per-tensor plan shared by both recipe formats.

A recipe (native or mergekit) turns tensor names into `TensorPlan`s; the executor and the
in-memory merger only ever see plans. `t` is always the weight of the adapted model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class TensorPlan:
    """How one tensor is merged.

    `method` is a name in the method registry (`spear_mm.merge.methods`): `lerp`, `slerp`,
    `slerp_rowwise`, `linear` (mergekit's weighted sum, with `weights = (w_base, w_adapted)` and
    `normalize`), or a task-vector method. `params` holds the method's other parameters for this
    tensor as sorted (name, value) pairs (density, lambda, seed, ...; defaults are the
    registry's). `rule` names the recipe entry that decided it (`rules[2]`, `default`,
    `slices[0].parameters.t`), for the report.
    """

    t: float
    method: str
    rule: str = "default"
    weights: tuple[float, float] | None = None
    normalize: bool = True
    params: tuple[tuple[str, Any], ...] = ()

    def param(self, name: str, default: Any = None) -> Any:
        """A method parameter of this tensor (see `params`), or `default`."""
        return dict(self.params).get(name, default)


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
