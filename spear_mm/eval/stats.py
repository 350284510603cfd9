"""95% intervals by the paired bootstrap over documents (or questions): small pure functions.

Every number a report states is a statistic of per-document records (`probe.DocScores`: NLL
nats and bytes per document; per-question correctness for multiple choice). A bootstrap
replicate draws the documents with replacement — `counts[b, d]` is how often document d is
drawn in replicate b — and recomputes the statistic. *Paired*: every model scored on the same
documents is resampled with the same draw, so what the models share (a hard document is hard
for all of them) cancels in their differences; that is why a paired interval of a difference is
narrower than one from independent draws whenever the models' per-document scores are
positively correlated (tested).

Intervals are percentile intervals of the replicates (level 95% by default); the resample count
and the seed are part of every record, and the same seed gives the same interval bit for bit.
Different probes (general and finance text) are different documents: each gets its own stream
of draws (`rng_for(seed, stream)`), and a statistic that reads both (matched general score →
domain gain) pairs them replicate by replicate.

Noise floor: a ratio (retention aside, whose denominator is a bpb far from 0) is only stated
when its denominator's interval excludes 0; otherwise it is "not measurable at this probe size"
and the interval of the denominator — the raw difference — is given instead (`ratio`).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

RESAMPLES = 2000
LEVEL = 0.95
NOT_MEASURABLE = "not measurable at this probe size"


@dataclass(frozen=True)
class Interval:
    """A point estimate with its bootstrap percentile interval and how it was obtained."""

    value: float
    lo: float
    hi: float
    level: float = LEVEL
    resamples: int = 0
    seed: int = 0
    n: int = 0  # documents (questions) resampled

    @property
    def excludes_zero(self) -> bool:
        return self.lo > 0.0 or self.hi < 0.0

    def contains(self, x: float) -> bool:
        return self.lo <= x <= self.hi

    def record(self) -> dict:
        return {
            "value": _num(self.value),
            "lo": _num(self.lo),
            "hi": _num(self.hi),
            "level": self.level,
            "resamples": self.resamples,
            "seed": self.seed,
            "n": self.n,
        }

    @classmethod
    def from_record(cls, rec: dict | None) -> Interval | None:
        if not rec:
            return None
        nan = math.nan
        return cls(
            *(nan if rec.get(k) is None else float(rec[k]) for k in ("value", "lo", "hi")),
            level=float(rec.get("level", LEVEL)),
            resamples=int(rec.get("resamples", 0)),
            seed=int(rec.get("seed", 0)),
            n=int(rec.get("n", 0)),
        )


def _num(x: float) -> float | None:
    return float(x) if x is not None and math.isfinite(x) else None


def rng_for(seed: int, stream: str) -> np.random.Generator:
    """A generator for one stream of draws (e.g. one probe's documents), fixed by seed + name."""
    tag = int.from_bytes(hashlib.sha256(stream.encode()).digest()[:8], "little")
    return np.random.default_rng([int(seed), tag])


def draw_counts(n: int, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """(resamples, n) int array: how often each of n items is drawn in each replicate."""
    idx = rng.integers(0, n, size=(resamples, n))
    counts = np.zeros((resamples, n), dtype=np.int64)
    np.add.at(counts, (np.arange(resamples)[:, None], idx), 1)
    return counts


def bpb_of(nll: np.ndarray, nbytes: np.ndarray, counts: np.ndarray | None = None) -> np.ndarray:
    """bits-per-byte of each model (rows of `nll`, shape (M, D)) on the documents, or on each
    replicate when `counts` (B, D) is given: result (M,) or (B, M).

    bpb = Σ_d w_d · nll_d / (ln 2 · Σ_d w_d · bytes_d), w = 1 (the point) or the draw counts.
    """
    nll = np.asarray(nll, dtype=np.float64)
    nbytes = np.asarray(nbytes, dtype=np.float64)
    if counts is None:
        return nll.sum(axis=1) / (math.log(2) * nbytes.sum())
    w = counts.astype(np.float64)
    return (w @ nll.T) / (math.log(2) * (w @ nbytes))[:, None]


def mean_of(values: np.ndarray, counts: np.ndarray | None = None) -> np.ndarray:
    """Mean of each row of `values` (M, Q) — e.g. MC correctness — or per replicate (B, M)."""
    values = np.asarray(values, dtype=np.float64)
    if counts is None:
        return values.mean(axis=1)
    w = counts.astype(np.float64)
    return (w @ values.T) / w.sum(axis=1)[:, None]


MIN_ITEMS = 5  # fewer documents (questions) than this: no interval (a bootstrap of 1-4 items
# reuses the same few values and gives a falsely narrow interval, zero-width for one document)
WRONG_WAY = "the adapted model moved the other way: there is no gain / forgetting to divide by"


def percentile(
    value: float, draws: np.ndarray, *, level: float = LEVEL, seed: int = 0, n: int = 0
) -> Interval:
    """Percentile interval of `draws` around `value`. NaN bounds when > 2.5% of draws are
    undefined (a ratio whose denominator crossed 0 in many replicates has no interval) or when
    `n` (documents resampled, 0 = not given) is below MIN_ITEMS."""
    draws = np.asarray(draws, dtype=np.float64)
    ok = draws[np.isfinite(draws)]
    few = 0 < n < MIN_ITEMS
    if few or len(ok) == 0 or len(ok) < 0.975 * len(draws):
        return Interval(float(value), math.nan, math.nan, level, len(draws), seed, n)
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(ok, [alpha, 1.0 - alpha])
    return Interval(float(value), float(lo), float(hi), level, len(draws), seed, n)


def ratio(
    num: float,
    num_draws: np.ndarray,
    den: float,
    den_draws: np.ndarray,
    *,
    sign: float = 1.0,
    level: float = LEVEL,
    seed: int = 0,
    n: int = 0,
) -> dict:
    """`num / den` with its interval, stated only when the denominator's interval lies entirely
    on the side `sign` says it should (e.g. sign=-1: a gain is a *fall* in bpb). Otherwise the
    reason — "not measurable at this probe size" (the interval contains 0, or there is none) or
    WRONG_WAY — with the denominator's (raw difference) interval.
    """
    den_iv = percentile(den, den_draws, level=level, seed=seed, n=n)
    lo, hi = sorted((sign * den_iv.lo, sign * den_iv.hi)) if den_iv.excludes_zero else (0, 0)
    if not lo > 0:
        reason = WRONG_WAY if hi < 0 else NOT_MEASURABLE
        return {"measurable": False, "reason": reason, "denominator": den_iv.record()}
    with np.errstate(divide="ignore", invalid="ignore"):
        draws = np.asarray(num_draws, dtype=np.float64) / np.asarray(den_draws, dtype=np.float64)
    iv = percentile(num / den, draws, level=level, seed=seed, n=n)
    return {"measurable": True, "interval": iv.record(), "denominator": den_iv.record()}


def bootstrap(
    statistic: Callable[..., float],
    samples: Sequence[np.ndarray],
    *,
    resamples: int = RESAMPLES,
    seed: int = 0,
    streams: Sequence[str] | None = None,
    level: float = LEVEL,
) -> Interval:
    """Generic paired bootstrap: `statistic(*samples)` with each sample's rows (its first axis:
    documents) resampled, one draw per sample per replicate, shared by all its columns (models).

    Slow path (a Python call per replicate) for statistics that are not linear in the counts,
    e.g. a Spearman ρ; `bpb_of` / `mean_of` are the vectorised ones.
    """
    samples = [np.asarray(s) for s in samples]
    names = streams or [f"sample{i}" for i in range(len(samples))]
    rngs = [rng_for(seed, s) for s in names]
    idx = [r.integers(0, len(s), size=(resamples, len(s))) for r, s in zip(rngs, samples)]
    draws = np.array(
        [statistic(*(s[i[b]] for s, i in zip(samples, idx))) for b in range(resamples)]
    )
    n = len(samples[0]) if samples else 0
    return percentile(statistic(*samples), draws, level=level, seed=seed, n=n)
