"""Every family against the uniform line on test-role text (spear_mm.pipeline.families), on
constructed per-document NLL where the answer is known."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from spear_mm.pipeline.families import chosen_points, families_finding, family_check
from spear_mm.sweep.document import SweepDoc

D = 40  # documents per probe
RNG = np.random.default_rng(7)
GENERAL = RNG.uniform(200, 400, D)  # base NLL per document (nats)
FINANCE = RNG.uniform(200, 400, D)
BYTES = {"general": [300] * D, "finance": [300] * D}
FORGET, GAIN = 0.10, 0.20  # adapted: general NLL +10%, finance NLL −20%


def docs(forget_share: float, gain_share: float, noise: float = 0.0, seed: int = 0) -> dict:
    """A model whose general NLL keeps `forget_share` of the adapted model's forgetting and whose
    finance NLL keeps `gain_share` of its gain, with optional per-document noise."""
    eps = np.random.default_rng(seed).normal(0.0, noise, (2, D))
    return {
        "general": list(GENERAL * (1 + FORGET * forget_share) * (1 + eps[0])),
        "finance": list(FINANCE * (1 - GAIN * gain_share) * (1 + eps[1])),
    }


UNIFORM_KNOBS = (0.0, 0.25, 0.5, 0.75, 1.0)  # knob = share of the adapted model kept


def sweep_doc(family_knob: float, family_recipe: str = "recipes/depth.yaml") -> SweepDoc:
    points = [
        {"family": "adapted", "knob": None, "role": "baseline"},
        {"family": "base", "knob": None, "role": "baseline"},
        *(
            {"family": "uniform", "knob": k, "role": "grid", "recipe": f"recipes/uniform_{k}.yaml"}
            for k in UNIFORM_KNOBS
        ),
        {"family": "depth", "knob": 0.3, "role": "grid", "recipe": "recipes/other.yaml"},
        {"family": "depth", "knob": family_knob, "role": "grid", "recipe": family_recipe},
    ]
    verdict = {"families": {"depth": {"best_knob": family_knob, "call": "beats"}}}
    return SweepDoc(schema_version=1, points=points, verdict=verdict)


def run(sweep: SweepDoc, models: dict[str, dict], adapted: dict | None = None) -> tuple:
    calls = []

    def score(path: Path) -> dict:
        calls.append(path.name)
        return models[path.name]

    anchors = {"base": docs(0, 0), "adapted": adapted or docs(1, 1)}
    out = family_check(sweep, Path("/sw"), score, anchors, BYTES, resamples=500, seed=3)
    return out, calls


def uniform_models(noise: float = 0.0) -> dict:
    return {f"uniform_{k}.yaml": docs(k, k, noise, seed=int(100 * k)) for k in UNIFORM_KNOBS}


def test_chosen_points_are_the_selection_verdicts_best_knob():
    uniform, chosen = chosen_points(sweep_doc(0.6))
    assert [p["knob"] for p in uniform] == list(UNIFORM_KNOBS)
    assert chosen["depth"]["knob"] == 0.6 and chosen["depth"]["recipe"] == "recipes/depth.yaml"


def test_a_family_that_keeps_more_gain_at_equal_forgetting_beats_uniform():
    # forgetting share 0.5 (recovered 0.5) with 80% of the gain: uniform keeps 50% there
    models = {**uniform_models(0.002), "depth.yaml": docs(0.5, 0.8, 0.002, seed=9)}
    out, calls = run(sweep_doc(0.6), models)
    rec = out["families"]["depth"]
    assert out["text_role"] == "test" and out["chosen_on"] == "selection"
    assert rec["best_knob"] == 0.6 and rec["selection_call"] == "beats"
    assert rec["best_advantage"] == pytest.approx(0.3, abs=0.02)
    iv = rec["best_advantage_interval"]
    assert 0 < iv["lo"] < rec["best_advantage"] < iv["hi"]
    assert rec["call"] == "beats" and out["layer_aware_beats_uniform"] is True
    assert sorted(calls) == sorted([*(f"uniform_{k}.yaml" for k in UNIFORM_KNOBS), "depth.yaml"])
    text = families_finding(out)
    assert text.startswith("Families vs uniform on test-role text") and "depth 0.6" in text
    assert "Yes: depth beat uniform" in text


def test_a_family_on_the_uniform_line_is_no_evidence_either_way():
    # the chosen point is the uniform point at 0.5 itself: its advantage is 0 in every draw
    out, calls = run(sweep_doc(0.5, "recipes/uniform_0.5.yaml"), uniform_models(0.002))
    rec = out["families"]["depth"]
    assert rec["best_advantage"] == pytest.approx(0.0, abs=1e-12)
    assert rec["call"] == "no evidence either way" and out["layer_aware_beats_uniform"] is False
    assert len(calls) == len(UNIFORM_KNOBS)  # the shared recipe was scored once


def test_a_family_below_the_line_loses():
    models = {**uniform_models(0.002), "depth.yaml": docs(0.5, 0.2, 0.002, seed=9)}
    out, _ = run(sweep_doc(0.6), models)
    assert out["families"]["depth"]["call"] == "loses"
    assert out["families"]["depth"]["best_advantage_interval"]["hi"] < 0


def test_without_a_measurable_gain_nothing_is_called():
    # the adapted model gained nothing on finance: gain kept is noise, no family is called
    flat = {"general": docs(1, 1)["general"], "finance": docs(0, 0, 0.01, seed=5)["finance"]}
    models = {**uniform_models(0.002), "depth.yaml": docs(0.5, 0.8, 0.002, seed=9)}
    out, _ = run(sweep_doc(0.6), models, adapted=flat)
    assert out["noise_floor"]["gain"]["measurable"] is False
    assert out["summary"].startswith("Not measurable on test-role text")
    assert out["families"]["depth"]["call"] == "no evidence either way"


def test_the_check_is_deterministic_and_needs_a_family():
    models = {**uniform_models(0.002), "depth.yaml": docs(0.5, 0.8, 0.002, seed=9)}
    assert run(sweep_doc(0.6), models)[0] == run(sweep_doc(0.6), models)[0]
    lone = SweepDoc(schema_version=1, points=sweep_doc(0.6).points, verdict={"families": {}})
    assert family_check(lone, Path("/sw"), None, {}, BYTES, resamples=100, seed=0) is None
