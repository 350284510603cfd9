"""Bootstrap intervals against independent computations on fixed toy sets."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from spear_mm.eval import evidence, stats


def _toy(n=60, seed=1):
    """Per-document NLL of two models on n documents: B is A plus small per-document noise,
    so their scores are strongly positively correlated (what paired resampling exploits)."""
    rng = np.random.default_rng(seed)
    nbytes = rng.integers(300, 900, size=n).astype(float)
    hard = rng.lognormal(0.0, 0.4, size=n)  # some documents are hard for every model
    a = hard * nbytes * 0.7
    b = a * (1 - 0.01) + rng.normal(0, 2.0, size=n)
    return np.vstack([a, b]), nbytes


def test_bpb_of_matches_a_plain_loop_over_the_same_draws():
    nll, nbytes = _toy()
    rng = stats.rng_for(0, "general")
    counts = stats.draw_counts(nll.shape[1], 50, rng)
    assert (counts.sum(axis=1) == nll.shape[1]).all()
    fast = stats.bpb_of(nll, nbytes, counts)
    for b in range(50):
        idx = [d for d in range(nll.shape[1]) for _ in range(counts[b, d])]
        for m in range(2):
            loop = math.fsum(nll[m, i] for i in idx) / (
                math.log(2) * math.fsum(nbytes[i] for i in idx)
            )
            assert fast[b, m] == pytest.approx(loop, rel=1e-12)
    point = stats.bpb_of(nll, nbytes)
    assert point[0] == pytest.approx(nll[0].sum() / (math.log(2) * nbytes.sum()))


def test_mean_interval_agrees_with_normal_theory_and_scipy():
    rng = np.random.default_rng(3)
    x = rng.normal(10.0, 2.0, size=400)
    counts = stats.draw_counts(len(x), 4000, stats.rng_for(0, "x"))
    draws = stats.mean_of(x[None, :], counts)[:, 0]
    iv = stats.percentile(x.mean(), draws, n=len(x))
    se = x.std(ddof=0) / math.sqrt(len(x))
    assert (iv.hi - iv.lo) / 2 == pytest.approx(1.96 * se, rel=0.08)
    ref = sps.bootstrap((x,), np.mean, n_resamples=4000, method="percentile", rng=0)
    assert iv.lo == pytest.approx(ref.confidence_interval.low, abs=0.25 * se)
    assert iv.hi == pytest.approx(ref.confidence_interval.high, abs=0.25 * se)


def test_paired_interval_of_a_difference_agrees_with_scipy_paired_bootstrap():
    nll, nbytes = _toy(n=80)
    per_byte = nll / nbytes  # equal bytes per document → bpb difference = mean difference
    x, y = per_byte[0], per_byte[1]
    counts = stats.draw_counts(len(x), 4000, stats.rng_for(0, "pair"))
    d = stats.mean_of(np.vstack([x, y]), counts)
    iv = stats.percentile(x.mean() - y.mean(), d[:, 0] - d[:, 1])
    ref = sps.bootstrap(
        (x, y), lambda a, b: np.mean(a) - np.mean(b), paired=True, n_resamples=4000,
        method="percentile", rng=0,
    )  # fmt: skip
    width = iv.hi - iv.lo
    assert iv.lo == pytest.approx(ref.confidence_interval.low, abs=0.1 * width)
    assert iv.hi == pytest.approx(ref.confidence_interval.high, abs=0.1 * width)


def test_paired_intervals_are_narrower_than_unpaired_for_correlated_models():
    nll, nbytes = _toy()
    rng = stats.rng_for(0, "general")
    shared = stats.draw_counts(nll.shape[1], 2000, rng)
    paired = stats.bpb_of(nll, nbytes, shared)
    own = [stats.draw_counts(nll.shape[1], 2000, rng) for _ in range(2)]
    a = stats.bpb_of(nll[:1], nbytes, own[0])[:, 0]
    b = stats.bpb_of(nll[1:], nbytes, own[1])[:, 0]
    value = float(np.subtract(*stats.bpb_of(nll, nbytes)))
    p = stats.percentile(value, paired[:, 0] - paired[:, 1])
    u = stats.percentile(value, a - b)
    assert (p.hi - p.lo) < 0.25 * (u.hi - u.lo)
    # Theory: var(a−b) = var(a) + var(b) − 2 cov(a, b): with cov > 0 pairing must help.
    assert np.cov(paired[:, 0], paired[:, 1])[0, 1] > 0
    assert p.excludes_zero and not u.excludes_zero  # the 1% improvement is only seen paired


def test_ratio_inside_the_noise_is_not_measurable():
    rng = np.random.default_rng(0)
    den_draws = rng.normal(0.001, 0.01, size=2000)  # a "gain" whose interval contains 0
    out = stats.ratio(0.0005, den_draws * 0.5, 0.001, den_draws, n=10)
    assert out["measurable"] is False and out["reason"] == stats.NOT_MEASURABLE
    assert out["denominator"]["lo"] < 0 < out["denominator"]["hi"]
    clear = stats.ratio(0.05, rng.normal(0.05, 0.005, 2000), 0.1, rng.normal(0.1, 0.005, 2000))
    assert clear["measurable"] and clear["interval"]["lo"] < 0.5 < clear["interval"]["hi"]
    # A clear denominator on the wrong side (the adapted model got *worse* on the domain).
    wrong = stats.ratio(
        0.05, rng.normal(0.05, 0.005, 2000), 0.1, rng.normal(0.1, 0.005, 2000), sign=-1
    )
    assert not wrong["measurable"] and wrong["reason"] == stats.WRONG_WAY
    # One to four documents: no interval at all, so nothing is measurable.
    few = stats.ratio(0.05, rng.normal(0.05, 0.005, 2000), 0.1, rng.normal(0.1, 0.005, 2000), n=3)
    assert not few["measurable"] and few["denominator"]["lo"] is None


def test_table_intervals_are_seeded_and_flag_unmeasurable_ratios():
    nll, nbytes = _toy()
    three = np.vstack([nll, nll[0] * 0.99])  # base, adapted (≈ base), a third model
    first = evidence.bpb_table((three, nbytes), (three, nbytes), resamples=500, seed=7)
    again = evidence.bpb_table((three, nbytes), (three, nbytes), resamples=500, seed=7)
    assert first == again
    assert first[0]["general_bpb"]["resamples"] == 500 and first[0]["general_bpb"]["seed"] == 7
    # adapted is base minus 1% plus noise: the gain is measurable, retention of base is 1.
    assert first[0]["general_retention"]["value"] == pytest.approx(1.0)
    assert first[2]["gain_kept"]["measurable"]
    assert first[1]["gain_kept"]["interval"]["value"] == pytest.approx(1.0)
    same = evidence.bpb_table((nll[[0, 0]], nbytes), (nll[[0, 0]], nbytes), resamples=200)
    assert same[1]["gain_kept"]["measurable"] is False  # adapted == base: nothing to keep


def test_accuracy_intervals_pair_questions_and_call_differences():
    right = [[f"q{i}", float(i % 3 != 0)] for i in range(90)]
    wrong = [[q, 1.0 - v] for q, v in right]
    out = evidence.accuracy_table([wrong, right, right], stream="mc", resamples=500)
    assert out[1]["accuracy"]["value"] == pytest.approx(60 / 90)
    assert out[2]["gain_kept"]["measurable"]  # adapted (right) gained clearly over base
    assert out[2]["gain_kept"]["interval"]["value"] == pytest.approx(1.0)
    worse = evidence.accuracy_table([right, wrong, right], stream="mc", resamples=500)
    assert worse[2]["gain_kept"]["reason"] == stats.WRONG_WAY  # adapted lost: no gain to keep
    low = stats.Interval(-0.02, -0.03, -0.01)
    high = stats.Interval(0.02, 0.01, 0.03)
    zero = stats.Interval(0.0, -0.01, 0.01)
    assert evidence.call(low, zero) == "better" and evidence.call(high, zero) == "worse"
    assert evidence.call(low, high) == "trade-off"
    assert evidence.call(zero, zero) == "no evidence either way"
