"""Unchanged layers, far-out layers and how far out they are (pure).

Why ranks alone are not enough: a rank keeps only the order of layers, so a layer that moved ten
times more than the rest scores like the runner-up, and a layer that did not move at all still gets
a rank (and depth can put it first). The combined score (``validate.combined_score``) therefore
keeps ranks where they were validated — the bulk of ordinary layers — and adds magnitude where it
matters:

- a layer is *unchanged* when every one of its tensors is identical in both checkpoints
  (``rel_drift``, ``norm_drift`` and every bias drift exactly 0): restoring it is a no-op, so it is
  ranked last by rule;
- a layer is *far out* when its overall change ``rel_drift`` (√ΣΔ² / √ΣW² over its matrices — over
  99% of its parameters) lies beyond Tukey's far-out fence Q3 + 3 · IQR of the changed layers; its
  *lift* is the distance beyond the fence in units of 2 · IQR (the mean absolute deviation from the
  median stands in when the IQR is 0). Median and quartiles ignore the outliers they must not be
  pulled by.
"""

from __future__ import annotations

import numpy as np

CHANGE_FEATURE = "rel_drift"  # the layer's overall change (matrices, norm-weighted)
FAR_OUT = 3.0  # Tukey's far-out fence: Q3 + 3 IQR


def center_scale(values: list[float]) -> tuple[float, float, float]:
    """(median, Q3, scale) of ``values``; scale = IQR, or the mean |x − median| when that is 0.

    Quantiles interpolate linearly (numpy's default); scale 0 means a constant feature.
    """
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        return 0.0, 0.0, 0.0
    q1, med, q3 = np.quantile(x, [0.25, 0.5, 0.75])
    scale = float(q3 - q1)
    if scale <= 0.0:
        scale = float(np.mean(np.abs(x - med)))
    return float(med), float(q3), scale


def unchanged_layers(features: list[dict[str, float]]) -> list[int]:
    """Layers whose tensors are all identical in both checkpoints (restoring them is a no-op).

    Needs ``rel_drift`` (matrices) in the features; a layer without it is not called unchanged
    (the features do not say), so specs over hand-made features behave as before.
    """
    return [i for i, f in enumerate(features) if _still(f)]


def _still(f: dict[str, float]) -> bool:
    # matrices, norm gains and biases (kept apart as `rel_drift:<kind>.bias`) all unchanged
    if CHANGE_FEATURE not in f or f[CHANGE_FEATURE] != 0.0 or f.get("norm_drift", 0.0) != 0.0:
        return False
    return all(v == 0.0 for k, v in f.items() if k.endswith(".bias"))


def changed_layers(features: list[dict[str, float]]) -> list[int]:
    still = set(unchanged_layers(features))
    return [i for i in range(len(features)) if i not in still]


def far_out_fence(features: list[dict[str, float]]) -> float | None:
    """Q3 + 3·scale of the changed layers' ``rel_drift``; None without that feature or with
    fewer than 4 changed layers (too few to call anything an outlier)."""
    live = changed_layers(features)
    if len(live) < 4 or any(CHANGE_FEATURE not in features[i] for i in live):
        return None
    _, q3, scale = center_scale([features[i][CHANGE_FEATURE] for i in live])
    return q3 + FAR_OUT * scale


def outlier_layers(features: list[dict[str, float]]) -> list[int]:
    """Changed layers whose overall change lies beyond the far-out fence, largest first."""
    fence = far_out_fence(features)
    if fence is None:
        return []
    out = [i for i in changed_layers(features) if features[i][CHANGE_FEATURE] > fence]
    return sorted(out, key=lambda i: (-features[i][CHANGE_FEATURE], i))


def outlier_lift(features: list[dict[str, float]]) -> list[float]:
    """How far each layer's overall change lies beyond the fence, in units of 2·scale (0 inside).

    max(0, x − fence) / (2·scale) — the span of one feature's ranks (0 to 1) is two IQRs of an
    evenly spread feature — continuous at the fence and growing
    with the magnitude, so a layer just past the fence moves a little and one ten IQRs past it
    moves to the top.
    """
    fence = far_out_fence(features)
    if fence is None:
        return [0.0] * len(features)
    live = changed_layers(features)
    _, _, scale = center_scale([features[i][CHANGE_FEATURE] for i in live])
    if scale <= 0.0:
        return [0.0] * len(features)
    return [
        max(0.0, f[CHANGE_FEATURE] - fence) / (2.0 * scale) if i in live else 0.0
        for i, f in enumerate(features)
    ]
