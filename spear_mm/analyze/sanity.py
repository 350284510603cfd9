"""The analyzer's own sanity report: unchanged layers, far-out layers, ranking vs magnitudes (pure).

Written to ``analysis.json:sanity`` and printed as warnings by `spear-mm analyze`; the study
report repeats the warnings. A warning means the ranking and the measured weight changes disagree
in a way a user would not expect; it is not an error (the spec may have reasons, and with
``ablation=true`` the measured harm decides — an outlier the ablation also ranks low is a note,
not a warning).
"""

from __future__ import annotations

import math

from spear_mm.analyze.magnitude import (
    CHANGE_FEATURE,
    center_scale,
    changed_layers,
    far_out_fence,
    outlier_layers,
    unchanged_layers,
)
from spear_mm.analyze.validate import ranking

# A top-ranked layer that changed less than this share of the median layer is a near no-op.
NEAR_NOOP = 0.1


def _near_top(n_changed: int, n_outliers: int) -> int:
    """How many leading ranks count as "near the top": 10% of the changed layers, at least 1,
    and never fewer than the outliers themselves."""
    return max(1, math.ceil(0.1 * n_changed), n_outliers)


def _outlier_entries(features, order, harm, med) -> list[dict]:
    pos = {layer: r for r, layer in enumerate(order)}
    harm_pos = {layer: r for r, layer in enumerate(ranking(harm))} if harm else {}
    out = []
    for i in outlier_layers(features):
        x = features[i][CHANGE_FEATURE]
        out.append(
            {
                "layer": i,
                CHANGE_FEATURE: x,
                "times_median": x / med if med > 0 else None,
                "rank": pos[i] + 1,
                "harm_rank": harm_pos[i] + 1 if i in harm_pos else None,
            }
        )
    return out


def _ranking_warnings(features, order, outliers, still, near, med) -> tuple[list[str], list[str]]:
    warnings, notes = [], []
    n = len(order)
    first_still = min((order.index(i) for i in still), default=n)
    if any(order.index(i) > first_still for i in changed_layers(features)):
        warnings.append(
            f"the ranking puts unchanged layer {order[first_still]} ahead of layers that changed; "
            "restoring it is a no-op (use the shipped score or drop that spec)"
        )
    for o in outliers:
        if o["rank"] <= near:
            continue
        line = (
            f"layer {o['layer']} changed {o['times_median']:.1f}x the median layer (far out) but "
            f"ranks {o['rank']} of {n}"
        )
        if o["harm_rank"] is not None and o["harm_rank"] > n // 2:
            notes.append(f"{line}; the ablation agrees (its general harm ranks {o['harm_rank']})")
        else:
            warnings.append(
                f"{line}: the ranking contradicts the magnitudes; check it with ablation=true"
            )
    for r, i in enumerate(order[:near]):
        x = features[i].get(CHANGE_FEATURE)
        if i not in still and x is not None and med > 0 and x < NEAR_NOOP * med:
            warnings.append(
                f"layer {i} ranks {r + 1} of {n} but changed only {x / med:.2g}x the median layer;"
                " its restore budget is spent on a near no-op"
            )
    return warnings, notes


def sanity_report(
    features: list[dict[str, float]], score: list[float], harm: list[float] | None = None
) -> dict:
    """Unchanged and far-out layers and the warnings about the ranking of ``score``.

    ``harm`` (the ablation's general harm, when run) turns a far-out layer ranked low into a note
    when the ablation also ranks it in its lower half.
    """
    order = ranking(score)
    still = unchanged_layers(features)
    live = changed_layers(features)
    have = bool(features) and all(CHANGE_FEATURE in features[i] for i in live)
    med = center_scale([features[i][CHANGE_FEATURE] for i in live])[0] if have and live else 0.0
    outliers = _outlier_entries(features, order, harm, med) if have else []
    near = _near_top(len(live), len(outliers))
    warnings, notes = _ranking_warnings(features, order, outliers, still, near, med)
    if len(still) == len(features) and features:
        warnings.append("no layer changed between base and adapted: nothing to restore")
    return {
        "change_feature": CHANGE_FEATURE,
        "median_change": med,
        "far_out_fence": far_out_fence(features) if have else None,
        "near_top": near,
        "unchanged_layers": still,
        "outlier_layers": outliers,
        "warnings": warnings,
        "notes": notes,
    }
