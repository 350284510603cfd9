"""Target solver: the recipe point with the most domain gain kept that meets a general target.

The target is on ``retention`` (general retention ≥ τ) or ``recovered`` (forgetting recovered ≥ τ,
scale-free: with bits-per-byte the adapted model may already retain > 90%). Steps:

1. If the adapted model meets the target, it is *trivially met*: the adapted recipe (knob 0) is
   selected and the report says so — restoring anything would only give gain away.
2. Each family is refined by bisection on its knob: between the largest grid knob that misses the
   target and the next one that meets it (scanning up from knob 0), `steps` midpoints are
   evaluated; this assumes the metric rises with the knob near the crossing, which is what the
   sweep measures (the report shows every point, so a non-monotone family is visible).
3. Among all recipe points (grid, refined, adapted, base) that meet the target, the one with the
   most gain kept wins (ties: the higher metric, then the smaller knob). None meets it: the
   target is *unreachable* and the best metric reached is reported. Only the base meets it: the
   result says the target costs all of the domain gain.

Replay and other non-recipe baselines are compared in the report but never selected.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from spear_mm.sweep.points import SweepPoint

Evaluate = Callable[[str, float], SweepPoint]
Snap = Callable[[str, float], float]


@dataclass
class Solution:
    """The solver's answer; `selected` is None only when the target is unreachable."""

    metric: str
    target: float
    status: str  # trivially_met | met | met_only_by_base | unreachable
    selected: SweepPoint | None
    message: str
    refined: list[SweepPoint] = field(default_factory=list)
    family_best: dict[str, dict] = field(default_factory=dict)


def meets(point: SweepPoint, metric: str, target: float) -> bool:
    value = point.get(metric)
    return math.isfinite(value) and value >= target


def _bracket(points: Sequence[SweepPoint], metric: str, target: float):
    """(lo, hi) knobs around the first crossing scanning up from knob 0, or None."""
    ordered = sorted(points, key=lambda p: p.knob)
    for lo, hi in zip(ordered, ordered[1:]):
        if not meets(lo, metric, target) and meets(hi, metric, target):
            return lo.knob, hi.knob
    return None


def bisect_family(
    family: str,
    points: Sequence[SweepPoint],
    metric: str,
    target: float,
    evaluate: Evaluate,
    steps: int,
    snap: Snap | None = None,
) -> list[SweepPoint]:
    """Evaluate up to `steps` midpoints of `family`'s crossing; returns the new points.

    `points` are the family's points with knobs, the adapted (0) and base (1) ends included.
    `snap` maps a knob to the nearest one the family can really express (whole-layer families);
    bisection stops when a midpoint snaps onto a bracket end.
    """
    bracket = _bracket(points, metric, target)
    new: list[SweepPoint] = []
    if bracket is None:
        return new
    lo, hi = bracket
    for _ in range(steps):
        mid = (lo + hi) / 2.0
        if snap is not None:
            mid = snap(family, mid)
        if mid <= lo or mid >= hi:
            break
        point = evaluate(family, mid)
        new.append(point)
        if meets(point, metric, target):
            hi = mid
        else:
            lo = mid
    return new


def _rank_key(point: SweepPoint, metric: str):
    gain = point.get("gain_kept")
    return (gain if math.isfinite(gain) else -math.inf, point.get(metric), -(point.knob or 0.0))


def _family_best(points: Sequence[SweepPoint], metric: str, target: float) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for fam in sorted({p.family for p in points}):
        ok = [p for p in points if p.family == fam and meets(p, metric, target)]
        if ok:
            best = max(ok, key=lambda p: _rank_key(p, metric))
            out[fam] = {
                "knob": best.knob,
                "gain_kept": best.get("gain_kept"),
                metric: best.get(metric),
                "recipe": best.recipe,
            }
        else:
            out[fam] = {"knob": None, "gain_kept": None, metric: None, "recipe": None}
    return out


def solve(
    points: Sequence[SweepPoint],
    metric: str,
    target: float,
    evaluate: Evaluate,
    *,
    steps: int = 4,
    snap: Snap | None = None,
) -> Solution:
    """Run the three steps of the module doc over `points` (recipe families + adapted/base)."""
    adapted = next(p for p in points if p.family == "adapted")
    base = next(p for p in points if p.family == "base")
    if metric == "recovered" and adapted.get("retention") >= 1.0:
        msg = (
            f"target {metric} >= {target:g} is trivially met: the adapted model did not forget "
            f"(general retention {adapted.get('retention'):.4f}); selected the adapted recipe"
        )
        return Solution(metric, target, "trivially_met", adapted, msg)
    if meets(adapted, metric, target):
        msg = (
            f"target {metric} >= {target:g} is trivially met: the adapted model already has "
            f"{metric} {adapted.get(metric):.4f}; selected the adapted recipe (knob 0)"
        )
        return Solution(metric, target, "trivially_met", adapted, msg)
    families = sorted({p.family for p in points if p.role != "baseline"})
    refined: list[SweepPoint] = []
    for fam in families:
        own = [p for p in points if p.family == fam] + [adapted, base]
        refined += bisect_family(fam, own, metric, target, evaluate, steps, snap)
    pool = [p for p in [*points, *refined] if p.recipe is not None]
    ok = [p for p in pool if meets(p, metric, target)]
    best_family = _family_best([p for p in pool if p.role != "baseline"], metric, target)
    if not ok:
        reached = max(
            (p.get(metric) for p in pool if math.isfinite(p.get(metric))), default=math.nan
        )
        msg = (
            f"target {metric} >= {target:g} is unreachable: the best recipe point reaches "
            f"{reached:.4f}; lower the target"
        )
        return Solution(metric, target, "unreachable", None, msg, refined, best_family)
    best = max(ok, key=lambda p: _rank_key(p, metric))
    status = "met_only_by_base" if best.family == "base" else "met"
    msg = (
        f"target {metric} >= {target:g} met by {best.label}: {metric} {best.get(metric):.4f}, "
        f"domain gain kept {best.get('gain_kept'):.4f}"
    )
    if status == "met_only_by_base":
        msg += " — only the base model meets it, so all of the domain gain is given up"
    return Solution(metric, target, status, best, msg, refined, best_family)
