"""Pareto frontier and the layer-aware vs uniform comparison (pure functions on numbers).

Both axes are "higher is better": x = domain gain kept, y = general retention or forgetting
recovered. Points with a non-finite coordinate (an `Undefined` metric) take no part.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence


def _finite(*values: float) -> bool:
    return all(v is not None and math.isfinite(float(v)) for v in values)


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the non-dominated points, sorted by x ascending (then y descending).

    Point p dominates q when p.x ≥ q.x and p.y ≥ q.y with one of them strict. Duplicates do not
    dominate each other, so equal points are all kept. Non-finite points are never on the front.
    """
    idx = [i for i, (x, y) in enumerate(points) if _finite(x, y)]
    # Sweep by x descending: a point is on the front when its y beats every y seen at larger x.
    idx.sort(key=lambda i: (-points[i][0], -points[i][1]))
    front: list[int] = []
    best_y = -math.inf
    best_x_at_best_y = math.inf
    for i in idx:
        x, y = points[i]
        if y > best_y or (y == best_y and x == best_x_at_best_y):
            front.append(i)
            if y > best_y:
                best_y, best_x_at_best_y = y, x
    return sorted(front, key=lambda i: (points[i][0], -points[i][1]))


def interpolate(line: Sequence[tuple[float, float]], x: float) -> float:
    """Piecewise-linear y of `line` (a list of (x, y)) at `x`; NaN outside its x range.

    The line is sorted by x first; at duplicate x the larger y is used (the better model).
    """
    pts = sorted((px, py) for px, py in line if _finite(px, py))
    if not pts or not _finite(x) or x < pts[0][0] or x > pts[-1][0]:
        return math.nan
    best: dict[float, float] = {}
    for px, py in pts:
        best[px] = max(py, best.get(px, -math.inf))
    xs = sorted(best)
    for lo, hi in zip(xs, xs[1:]):
        if lo <= x <= hi:
            w = (x - lo) / (hi - lo)
            return best[lo] * (1.0 - w) + best[hi] * w
    return best[xs[0]]  # a single x


def envelope_at(line: Sequence[tuple[float, float]], x: float) -> float:
    """The most y the line's Pareto envelope offers at x or better (both axes maximized).

    The line is first reduced to its non-dominated points (a non-monotone line — e.g. a CPT that
    did not forget, where interpolation improves both axes — is judged by its best points), then
    interpolated piecewise-linearly; below the envelope's smallest x it is flat at its largest y
    (that y is reached at a larger x); above its largest x it is NaN (no point that far).
    """
    front = [line[i] for i in pareto_front(list(line))]
    if not front or not _finite(x) or x > front[-1][0]:
        return math.nan
    if x <= front[0][0]:
        return front[0][1]
    return interpolate(front, x)


def gain_advantage(
    line: Sequence[tuple[float, float]], points: Sequence[tuple[float, float]]
) -> list[float]:
    """For each (general, gain) point: gain − the uniform envelope's gain at the same general
    score (NaN out of range). Positive = more domain gain kept than uniform at equal general."""
    return [gain - envelope_at(line, rec) for rec, gain in points]


def compare_families(
    uniform_line: Sequence[tuple[float, float]],
    families: Mapping[str, Sequence[tuple[float, float, float]]],
    *,
    margin: float = 0.02,
) -> dict:
    """Verdict: does any family beat the uniform line at equal general score?

    `uniform_line` holds (general, gain) of uniform points including the adapted and base ends,
    general being forgetting recovered (or retention; both rise as general bpb falls, so the
    verdict is the same); `families` maps a family to its (knob, general, gain) points. A family *beats*
    uniform when one of its points keeps more than `margin` more gain than the line at the same
    recovered (probe noise is about a percent, so smaller differences are not called).
    """
    per_family: dict[str, dict] = {}
    for fam, pts in families.items():
        adv = gain_advantage(uniform_line, [(r, g) for _, r, g in pts])
        rows = [(k, r, g, a) for (k, r, g), a in zip(pts, adv) if _finite(a)]
        if not rows:
            per_family[fam] = {"compared_points": 0, "beats_uniform": False}
            continue
        best = max(rows, key=lambda row: row[3])
        worst = min(rows, key=lambda row: row[3])
        per_family[fam] = {
            "compared_points": len(rows),
            "best_advantage": best[3],
            "best_knob": best[0],
            "best_general": best[1],
            "worst_advantage": worst[3],
            "mean_advantage": math.fsum(r[3] for r in rows) / len(rows),
            "points_above_uniform": sum(r[3] > margin for r in rows),
            "beats_uniform": best[3] > margin,
        }
    winners = [f for f, v in per_family.items() if v["beats_uniform"]]
    compared = any(v["compared_points"] for v in per_family.values())
    return {
        # None: nothing could be compared (e.g. the adapted model did not forget at all).
        "layer_aware_beats_uniform": bool(winners) if compared else None,
        "margin": margin,
        "families": per_family,
        "summary": _summary(per_family, winners, margin),
    }


def _summary(per_family: dict, winners: list[str], margin: float) -> str:
    if not per_family:
        return "no layer-aware family was swept; nothing to compare with uniform interpolation"
    if not any(v["compared_points"] for v in per_family.values()):
        return (
            "Not compared: no layer-aware point has a defined forgetting recovered inside the "
            "uniform line's range (did the adapted model forget anything on the general probe?)"
        )
    if not winners:
        best = max(
            (f for f in per_family if per_family[f]["compared_points"]),
            key=lambda f: per_family[f]["best_advantage"],
            default=None,
        )
        tail = (
            f" (best: {best}, {per_family[best]['best_advantage']:+.3f} gain kept)" if best else ""
        )
        return (
            "No: no layer-aware family keeps more than "
            f"{margin:.2f} more domain gain than uniform interpolation at equal general "
            f"score{tail}."
        )
    top = max(winners, key=lambda f: per_family[f]["best_advantage"])
    v = per_family[top]
    return (
        f"Yes: {', '.join(winners)} beat uniform interpolation; best is {top} at knob "
        f"{v['best_knob']:.3g}, keeping {v['best_advantage']:+.3f} more domain gain than uniform "
        f"at the same general score ({v['best_general']:.3f})."
    )
