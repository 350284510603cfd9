"""The study gate on constructed rows: forgetting ≥ 5 half-widths, uniform gain kept ≤ 100%."""

from __future__ import annotations

from spear_mm.pipeline.gate import FORGETTING_MULTIPLE, gate_finding, study_gate


def _adapted(value, lo, hi):
    den = {"value": value, "lo": lo, "hi": hi}
    return {"ci": {"forgetting_recovered": {"measurable": True, "denominator": den}}}


def _uniform(value, lo, hi, measurable=True):
    if not measurable:
        return {"ci": {"gain_kept": {"measurable": False, "reason": "not measurable"}}}
    iv = {"value": value, "lo": lo, "hi": hi}
    return {"ci": {"gain_kept": {"measurable": True, "interval": iv}}}


def test_gate_passes_on_clear_forgetting_without_denoising():
    g = study_gate(_adapted(0.10, 0.09, 0.11), _uniform(0.90, 0.80, 1.02))
    assert g["passed"] is True and g["regime"] == "forgetting"
    assert "10.0× its interval's half-width" in g["checks"][0]["text"]
    assert gate_finding(g).startswith("Gate passed (test-role text)")


def test_forgetting_inside_five_half_widths_fails():
    # excludes zero (lo > 0) but only 4 half-widths: not "real" by the gate's standard
    half = 0.01
    g = study_gate(_adapted(4 * half, 3 * half, 5 * half), _uniform(0.9, 0.8, 1.0))
    assert FORGETTING_MULTIPLE == 5.0
    assert g["passed"] is False and g["regime"] == "forgetting not clear"
    assert "say nothing about layer localisation" in gate_finding(g)
    # exactly five half-widths passes (the boundary is inclusive)
    assert study_gate(_adapted(0.05, 0.04, 0.06), _uniform(0.9, 0.8, 1.0))["passed"] is True


def test_uniform_keeping_more_than_all_the_gain_is_a_denoising_regime():
    g = study_gate(_adapted(0.10, 0.09, 0.11), _uniform(1.25, 1.03, 1.5))
    assert g["passed"] is False and g["regime"] == "denoising"
    text = gate_finding(g)
    assert "denoising regime" in text and "125.0% [103.0, 150.0]" in text
    # an interval reaching down to 100% is consistent with ≤ 100%: passes
    assert study_gate(_adapted(0.10, 0.09, 0.11), _uniform(1.1, 1.0, 1.3))["passed"] is True


def test_missing_data_leaves_the_gate_undecided():
    g = study_gate(_adapted(0.10, 0.09, 0.11), None)
    assert g["passed"] is None and "no uniform row in the table" in gate_finding(g)
    g = study_gate(_adapted(0.10, 0.09, 0.11), _uniform(0, 0, 0, measurable=False))
    assert g["passed"] is None and g["regime"] == "undecided"
    assert study_gate(None, None)["checks"][0]["text"] == "no interval"


def test_a_failed_check_fails_the_gate_even_when_the_other_lacks_data():
    g = study_gate(_adapted(-0.2, -0.25, -0.15), None)
    assert g["passed"] is False and g["regime"] == "forgetting not clear"
    assert "moved -0.2000 bpb [-0.2500, -0.1500]: no forgetting" in g["checks"][0]["text"]
