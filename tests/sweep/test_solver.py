"""Target solver on synthetic families whose scores are known functions of the knob."""

from __future__ import annotations

import math

import pytest

from spear_mm.sweep.points import SweepPoint
from spear_mm.sweep.solver import solve

# Each family: recovered(a) and gain_kept(a); retention = 0.7 + 0.3 * recovered (a CPT that lost
# 30% of general ability), so both targets can be checked against closed forms.
FAMILIES = {
    "uniform": (lambda a: a**0.5, lambda a: 1.0 - a),
    "depth": (lambda a: a**0.35, lambda a: 1.0 - a),
}


def point(family, a, role="grid"):
    rec_f, gain_f = FAMILIES.get(family, FAMILIES["uniform"])
    rec, gain = rec_f(a), gain_f(a)
    p = SweepPoint(family, a, role, {}, recipe=f"recipes/{family}_{a:.4f}.yaml")
    p.scores = {"recovered": rec, "gain_kept": gain, "retention": 0.7 + 0.3 * rec}
    return p


def grid(knobs=(0.1, 0.2, 0.3, 0.4, 0.5, 0.7)):
    pts = [point("adapted", 0.0, "baseline"), point("base", 1.0, "baseline")]
    return pts + [point(f, a) for f in FAMILIES for a in knobs]


def evaluate(family, a):
    return point(family, a, "refined")


def test_bisection_meets_the_target_and_picks_the_best_family():
    calls = []
    sol = solve(
        grid(), "recovered", 0.71, lambda f, a: calls.append((f, a)) or evaluate(f, a), steps=8
    )
    assert sol.status == "met"
    # Independent closed form: depth reaches rec 0.71 at a = 0.71^(1/0.35), uniform at 0.71^2.
    a_depth, a_uniform = 0.71 ** (1 / 0.35), 0.71**2
    assert sol.selected.family == "depth"
    assert sol.selected.get("recovered") >= 0.71
    assert sol.selected.knob == pytest.approx(a_depth, abs=0.1 / 2**8 * 2)
    assert sol.family_best["uniform"]["knob"] == pytest.approx(a_uniform, abs=0.1 / 2**8 * 2)
    assert len(calls) == 16 and all(p.role == "refined" for p in sol.refined)


def test_retention_target():
    sol = solve(grid(), "retention", 0.9, evaluate, steps=10)
    # retention 0.9 ⇔ recovered 2/3
    assert sol.selected.family == "depth"
    assert sol.selected.knob == pytest.approx((2 / 3) ** (1 / 0.35), abs=1e-3)


def test_trivially_met_by_the_adapted_model():
    pts = grid()
    pts[0].scores["retention"] = 0.95
    sol = solve(pts, "retention", 0.9, evaluate)
    assert sol.status == "trivially_met" and sol.selected.family == "adapted"
    assert "trivially met" in sol.message and not sol.refined


def test_no_forgetting_makes_a_recovered_target_trivial():
    pts = grid()
    pts[0].scores.update(retention=1.01, recovered=math.nan)
    sol = solve(pts, "recovered", 0.5, evaluate)
    assert sol.status == "trivially_met" and "did not forget" in sol.message


def test_unreachable_target():
    sol = solve(grid(), "retention", 1.2, evaluate)
    assert sol.status == "unreachable" and sol.selected is None
    assert "unreachable" in sol.message and "1.0000" in sol.message  # the base's retention


def test_only_the_base_meets_it():
    pts = [point("adapted", 0.0, "baseline"), point("base", 1.0, "baseline")]
    pts += [point("uniform", a) for a in (0.2, 0.5)]
    for p in pts[2:]:
        p.scores["retention"] = 0.8
    sol = solve(pts, "retention", 0.99, lambda f, a: _low(f, a), steps=3)
    assert sol.status == "met_only_by_base" and sol.selected.family == "base"
    assert "all of the domain gain" in sol.message


def _low(family, a):
    p = point(family, a, "refined")
    p.scores["retention"] = 0.8
    return p


def test_snap_stops_on_whole_layer_steps():
    seen = []

    def snap(family, a):
        return round(a * 4) / 4

    pts = grid(knobs=(0.25, 0.5, 0.75))
    solve(pts, "recovered", 0.71, lambda f, a: seen.append(a) or evaluate(f, a), steps=6, snap=snap)
    assert all(a * 4 == int(a * 4) for a in seen)
