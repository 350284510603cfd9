"""Retention / gain kept / forgetting recovered: definitions, directions, degenerate cases."""

import math
import pickle

import pytest

from spear_mm.eval import metrics as M


def test_retention_both_directions():
    assert M.retention(0.6, 0.8, higher_is_better=True) == pytest.approx(0.75)
    # bits-per-byte: the model is worse (higher) -> retention below 1, base / model.
    assert M.retention(1.5, 1.2, higher_is_better=False) == pytest.approx(0.8)
    assert M.retention(1.2, 1.2, higher_is_better=False) == 1.0


@pytest.mark.parametrize(
    "args, reason",
    [
        ((0.5, 0.0, True), "base score is 0"),
        ((0.0, 1.0, False), "model score is 0"),
        ((-0.1, 1.0, True), "negative score"),
        ((math.nan, 1.0, True), "not a finite number"),
        ((1.0, math.inf, False), "not a finite number"),
    ],
)
def test_retention_undefined(args, reason):
    value = M.retention(*args)
    assert isinstance(value, M.Undefined) and math.isnan(value)
    assert reason in value.reason
    assert not M.is_defined(value)


def test_gain_kept_is_scale_free_and_direction_free():
    # Accuracy up: base 0.40, adapted 0.50, model 0.47 -> 70% of the gain kept.
    assert M.gain_kept(0.47, 0.40, 0.50) == pytest.approx(0.7)
    # bits-per-byte down: base 1.235, adapted 1.035, model 1.095 -> (1.095-1.235)/(1.035-1.235).
    assert M.gain_kept(1.095, 1.235, 1.035, higher_is_better=False) == pytest.approx(0.7)
    # An affine change of units (x -> 3x + 2) does not change the ratio.
    a = M.gain_kept(3 * 0.47 + 2, 3 * 0.40 + 2, 3 * 0.50 + 2)
    assert a == pytest.approx(0.7)


def test_gain_kept_degenerate():
    no_gain = M.gain_kept(0.5, 0.4, 0.4)
    assert isinstance(no_gain, M.Undefined) and "no domain gain" in no_gain.reason
    tiny = M.gain_kept(0.5, 0.4, 0.4001, min_delta=1e-3)
    assert isinstance(tiny, M.Undefined)
    # The adapted model got worse on the domain task: nothing to keep when the direction is known.
    worse = M.gain_kept(0.35, 0.40, 0.30, higher_is_better=True)
    assert isinstance(worse, M.Undefined) and "other way" in worse.reason
    # ... and without the direction the ratio is still returned.
    assert M.gain_kept(0.35, 0.40, 0.30) == pytest.approx(0.5)


def test_forgetting_recovered_matches_the_paper_example():
    # 69.7% retention for plain CPT, 91.2% for the merge: 71% of the forgetting recovered.
    value = M.forgetting_recovered(0.912, 1.0, 0.697, higher_is_better=True)
    assert value == pytest.approx((0.912 - 0.697) / (1.0 - 0.697))
    assert round(value, 2) == 0.71


def test_forgetting_recovered_bits_per_byte():
    # General bpb: base 1.336, adapted 1.459, model 1.360 -> recovered (1.459-1.360)/(1.459-1.336).
    value = M.forgetting_recovered(1.360, 1.336, 1.459, higher_is_better=False)
    assert value == pytest.approx(0.099 / 0.123)
    # Back at the base: 1.0; no better than the adapted model: 0.0.
    assert M.forgetting_recovered(1.336, 1.336, 1.459) == 1.0
    assert M.forgetting_recovered(1.459, 1.336, 1.459) == 0.0


def test_forgetting_recovered_degenerate():
    none = M.forgetting_recovered(1.3, 1.3, 1.3)
    assert isinstance(none, M.Undefined) and "no forgetting" in none.reason
    # The adapted model is *better* than the base on general text (an Instruct base): no forgetting.
    better = M.forgetting_recovered(1.25, 1.30, 1.28, higher_is_better=False)
    assert isinstance(better, M.Undefined) and "other way" in better.reason


def test_undefined_survives_pickle_and_arithmetic():
    u = M.Undefined("why")
    assert pickle.loads(pickle.dumps(u)).reason == "why"
    assert math.isnan(u + 1.0) and not (u > 0) and not (u < 0)
    assert "why" in repr(u)


def test_averages_skip_and_report_undefined_tasks():
    model = {"a": 0.6, "b": 0.3, "c": 0.9}
    base = {"a": 0.8, "b": 0.0, "c": 0.9}
    avg = M.mean_retention(model, base, higher_is_better=True)
    assert avg.value == pytest.approx((0.75 + 1.0) / 2)
    assert set(avg.undefined) == {"b"} and "base score is 0" in avg.undefined["b"]
    assert set(avg.per_task) == {"a", "b", "c"}
    empty = M.average({})
    assert isinstance(empty.value, M.Undefined)
    all_bad = M.mean_retention({"a": 1.0}, {"a": 0.0}, True)
    assert isinstance(all_bad.value, M.Undefined)


def test_mixed_directions_and_means():
    base = {"bpb": 1.2, "acc": 0.5}
    adapted = {"bpb": 1.5, "acc": 0.4}
    model = {"bpb": 1.3, "acc": 0.45}
    hib = {"bpb": False, "acc": True}
    fr = M.mean_forgetting_recovered(model, base, adapted, hib)
    assert fr.value == pytest.approx(((1.5 - 1.3) / (1.5 - 1.2) + 0.5) / 2)
    ret = M.mean_retention(model, base, hib)
    assert ret.value == pytest.approx((1.2 / 1.3 + 0.45 / 0.5) / 2)
    gk = M.mean_gain_kept(model, base, adapted, hib)  # both "gains" are losses here
    assert set(gk.undefined) == {"bpb", "acc"}


def test_pooled_forms_use_mean_retention():
    base = {"x": 0.5, "y": 2.0}
    adapted = {"x": 0.35, "y": 2.6}
    model = {"x": 0.45, "y": 2.1}
    hib = {"x": True, "y": False}
    r_m = (0.45 / 0.5 + 2.0 / 2.1) / 2
    r_a = (0.35 / 0.5 + 2.0 / 2.6) / 2
    got = M.pooled_forgetting_recovered(model, base, adapted, hib)
    assert got == pytest.approx((r_m - r_a) / (1 - r_a))
    # Tasks missing from one mapping are left out of both means.
    got2 = M.pooled_forgetting_recovered({**model, "z": 1.0}, base, adapted, hib)
    assert got2 == pytest.approx(got)
    # Domain side: adapted improves both tasks, model keeps part of it.
    dom_a = {"x": 0.6, "y": 1.6}
    n_m = (0.45 / 0.5 + 2.0 / 2.1) / 2
    n_a = (0.6 / 0.5 + 2.0 / 1.6) / 2
    assert M.pooled_gain_kept(model, base, dom_a, hib) == pytest.approx((n_m - 1) / (n_a - 1))
    assert isinstance(M.pooled_gain_kept(model, base, base, hib), M.Undefined)
