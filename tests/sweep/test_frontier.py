"""Pareto frontier and the uniform-line comparison on hand-made points."""

from __future__ import annotations

import itertools
import math
import random

import pytest

from spear_mm.sweep.frontier import compare_families, interpolate, pareto_front


def brute_front(points):
    """O(n²) definition: not dominated by any other point (independent of the sweep code)."""
    out = []
    for i, (x, y) in enumerate(points):
        if not (math.isfinite(x) and math.isfinite(y)):
            continue
        dominated = any(
            (x2 >= x and y2 >= y and (x2 > x or y2 > y))
            for j, (x2, y2) in enumerate(points)
            if j != i and math.isfinite(x2) and math.isfinite(y2)
        )
        if not dominated:
            out.append(i)
    return out


def test_front_on_hand_made_points():
    pts = [(1.0, 0.5), (0.8, 0.8), (0.9, 0.6), (0.5, 0.9), (0.7, 0.7), (0.0, 1.0), (0.4, 0.85)]
    # (0.7, 0.7) is dominated by (0.8, 0.8); (0.4, 0.85) by (0.5, 0.9).
    assert pareto_front(pts) == [5, 3, 1, 2, 0]


def test_front_skips_nan_and_keeps_duplicates():
    pts = [(0.5, 0.5), (math.nan, 2.0), (0.5, 0.5), (0.2, 0.4)]
    assert pareto_front(pts) == [0, 2]


@pytest.mark.parametrize("seed", range(5))
def test_front_matches_the_definition(seed):
    rng = random.Random(seed)
    pts = [(round(rng.random(), 1), round(rng.random(), 1)) for _ in range(40)]
    assert sorted(pareto_front(pts)) == brute_front(pts)


def test_interpolate():
    line = [(0.0, 1.0), (1.0, 0.0), (0.5, 0.9)]
    assert interpolate(line, 0.25) == pytest.approx(0.95)
    assert interpolate(line, 0.75) == pytest.approx(0.45)
    assert math.isnan(interpolate(line, 1.5))


def _jitter(uniform, fams, scale, n=200, seed=0):
    """Replicates: every gain shifted by seeded noise of `scale` (a stand-in for resampling)."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        line = [(r, g + rng.gauss(0, scale)) for r, g in uniform]
        fam = {f: [(k, r, g + rng.gauss(0, scale)) for k, r, g in pts] for f, pts in fams.items()}
        out.append((line, fam))
    return out


def test_compare_families_calls_a_winner_only_when_the_interval_excludes_zero():
    uniform = [(0.0, 1.0), (0.5, 0.8), (1.0, 0.0)]
    fams = {
        "depth": [(0.2, 0.5, 0.9), (0.4, 0.75, 0.5)],  # 0.9 vs 0.8 at rec 0.5: +0.1
        "topk": [(0.2, 0.5, 0.6)],  # below the line
    }
    v = compare_families(uniform, fams, replicates=_jitter(uniform, fams, 0.01))
    assert v["layer_aware_beats_uniform"] is True
    depth = v["families"]["depth"]
    assert depth["best_advantage"] == pytest.approx(0.1)
    assert depth["best_knob"] == 0.2
    assert 0 < depth["best_advantage_interval"]["lo"] < 0.1 < depth["best_advantage_interval"]["hi"]
    assert v["families"]["topk"]["beats_uniform"] is False
    assert v["families"]["topk"]["call"] == "loses"
    assert v["families"]["topk"]["best_advantage"] == pytest.approx(-0.2)
    assert v["summary"].startswith("Yes: depth") and "95% CI" in v["summary"]
    # The same point estimates inside wide noise: no evidence either way, interval printed.
    v = compare_families(uniform, fams, replicates=_jitter(uniform, fams, 0.2))
    assert v["layer_aware_beats_uniform"] is False
    assert v["families"]["depth"]["call"] == "no evidence either way"
    assert v["summary"].startswith("No evidence either way") and "95% CI" in v["summary"]
    # No replicates at all: a point estimate alone never calls a winner.
    v = compare_families(uniform, fams)
    assert v["layer_aware_beats_uniform"] is False and "no interval" in v["summary"]
    # Replicates over fewer than MIN_ITEMS documents: no interval, so no call, the count kept.
    v = compare_families(uniform, fams, replicates=_jitter(uniform, fams, 0.01), n=4)
    assert v["layer_aware_beats_uniform"] is False
    assert v["families"]["depth"]["call"] == "no evidence either way"
    assert v["families"]["depth"]["best_advantage_interval"]["lo"] is None
    v = compare_families(uniform, fams, replicates=_jitter(uniform, fams, 0.01), n=5)
    assert v["families"]["depth"]["call"] == "beats"


def test_compare_families_names_the_losers_when_none_wins():
    uniform = [(0.0, 1.0), (0.5, 0.8), (1.0, 0.0)]
    fams = {"depth": [(0.2, 0.5, 0.81)], "topk": [(0.2, 0.5, 0.5)]}  # +0.01 and -0.3
    v = compare_families(uniform, fams, replicates=_jitter(uniform, fams, 0.05))
    assert v["families"]["depth"]["call"] == "no evidence either way"
    assert v["families"]["topk"]["call"] == "loses"
    assert v["layer_aware_beats_uniform"] is False
    assert v["summary"].startswith("No: no layer-aware family beats uniform; topk lose")
    assert "undecided" in v["summary"] and "95% CI" in v["summary"]


def test_compare_families_no_and_not_compared():
    uniform = [(0.0, 1.0), (1.0, 0.0)]
    fams = {"depth": [(0.3, 0.5, 0.3)]}
    v = compare_families(uniform, fams, replicates=_jitter(uniform, fams, 0.01))
    assert v["layer_aware_beats_uniform"] is False and v["summary"].startswith("No: uniform")
    v = compare_families(uniform, {"depth": [(0.3, math.nan, 0.5)]})
    assert v["layer_aware_beats_uniform"] is None and v["summary"].startswith("Not compared")


def test_pairs_all_orders_same_front():
    pts = [(0.1, 0.9), (0.9, 0.1), (0.5, 0.5), (0.4, 0.4)]
    fronts = {
        tuple(sorted(p[i] for i in pareto_front(list(p)))) for p in itertools.permutations(pts)
    }
    assert fronts == {((0.1, 0.9), (0.5, 0.5), (0.9, 0.1))}


def test_envelope_judges_a_non_monotone_uniform_line_by_its_best_points():
    from spear_mm.sweep.frontier import envelope_at

    # A CPT that did not forget: interpolation improves both axes, then falls off.
    line = [(1.00, 0.0), (1.01, 1.0), (1.02, 1.06), (1.025, 1.0)]
    assert envelope_at(line, 1.005) == pytest.approx(1.06)  # flat: 1.06 reached further right
    assert envelope_at(line, 1.0225) == pytest.approx(1.03)  # between (1.02, 1.06), (1.025, 1.0)
    assert math.isnan(envelope_at(line, 1.03))
    v = compare_families(line, {"depth": [(0.3, 1.016, 1.04)]})
    assert v["families"]["depth"]["best_advantage"] == pytest.approx(-0.02)
    assert v["layer_aware_beats_uniform"] is False
