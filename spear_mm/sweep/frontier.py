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
    replicates: Sequence[tuple[Sequence, Mapping]] = (),
    seed: int = 0,
    n: int = 0,
) -> dict:
    """Verdict: does any family beat the uniform line at equal general score?

    `uniform_line` holds (general, gain) of uniform points including the adapted and base ends,
    general being forgetting recovered (or retention; both rise as general bpb falls, so the
    verdict is the same); `families` maps a family to its (knob, general, gain) points.
    `replicates` are the same two arguments recomputed on bootstrap resamples of the probe
    documents (spear_mm.sweep.evidence). Each family's best point (largest advantage over the
    line) gets the paired 95% interval of its advantage: the family *beats* uniform only when
    that interval lies above 0, *loses* when it lies below, and otherwise there is no evidence
    either way. Without replicates nothing is called either way (a point estimate is no
    evidence). `n`: the fewest documents a replicate resampled in either probe (recorded with
    each interval; below `eval.stats.MIN_ITEMS` there is no interval, so no call).
    """
    per_family: dict[str, dict] = {}
    for fam, pts in families.items():
        adv = gain_advantage(uniform_line, [(r, g) for _, r, g in pts])
        rows = [(j, k, r, g, a) for j, ((k, r, g), a) in enumerate(zip(pts, adv)) if _finite(a)]
        if not rows:
            per_family[fam] = {"compared_points": 0, "beats_uniform": False, "call": "not compared"}
            continue
        best = max(rows, key=lambda row: row[4])
        iv = _advantage_interval(fam, best[0], best[4], replicates, seed, n)
        call = "beats" if iv.lo > 0 else "loses" if iv.hi < 0 else "no evidence either way"
        per_family[fam] = {
            "compared_points": len(rows),
            "best_advantage": best[4],
            "best_advantage_interval": iv.record(),
            "best_knob": best[1],
            "best_general": best[2],
            "worst_advantage": min(row[4] for row in rows),
            "mean_advantage": math.fsum(row[4] for row in rows) / len(rows),
            "beats_uniform": call == "beats",
            "call": call,
        }
    winners = [f for f, v in per_family.items() if v["beats_uniform"]]
    compared = any(v["compared_points"] for v in per_family.values())
    return {
        # None: nothing could be compared (e.g. the adapted model did not forget at all).
        "layer_aware_beats_uniform": bool(winners) if compared else None,
        "rule": "beats uniform only when the paired 95% interval of the advantage excludes 0",
        "families": per_family,
        "summary": _summary(per_family, winners),
    }


def _advantage_interval(fam: str, j: int, value: float, replicates, seed: int, n: int):
    from spear_mm.eval.stats import percentile

    draws = []
    for line, fams in replicates:
        _, r, g = fams[fam][j]
        draws.append(gain_advantage(line, [(r, g)])[0])
    return percentile(value, draws if draws else [math.nan], seed=seed, n=n)


def _ci(v: dict) -> str:
    iv = v.get("best_advantage_interval") or {}
    lo, hi = iv.get("lo"), iv.get("hi")
    if lo is None or hi is None:
        return f"{v['best_advantage']:+.3f} (no interval)"
    return f"{v['best_advantage']:+.3f} [95% CI {lo:+.3f}, {hi:+.3f}]"


def _summary(per_family: dict, winners: list[str]) -> str:
    if not per_family:
        return "no layer-aware family was swept; nothing to compare with uniform interpolation"
    compared = {f: v for f, v in per_family.items() if v["compared_points"]}
    if not compared:
        return (
            "Not compared: no layer-aware point has a defined forgetting recovered inside the "
            "uniform line's range (did the adapted model forget anything on the general probe?)"
        )
    parts = [f"{f} {_ci(v)}" for f, v in compared.items()]
    tail = "; ".join(parts) + " gain kept vs uniform at equal general score (best point each)"
    if winners:
        return f"Yes: {', '.join(winners)} beat uniform interpolation — {tail}."
    losers = [f for f, v in compared.items() if v["call"] == "loses"]
    if len(losers) == len(compared):
        return f"No: uniform interpolation beats every layer-aware family — {tail}."
    if losers:
        return (
            f"No: no layer-aware family beats uniform; {', '.join(losers)} lose to it (interval "
            f"below 0), the others are undecided (interval spans 0) — {tail}."
        )
    return f"No evidence either way that a layer-aware family beats uniform — {tail}."
