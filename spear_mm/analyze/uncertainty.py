"""The analyzer's ρ with its interval: resample the ablation's documents, re-rank, re-correlate.

The per-layer harm (bpb of the adapted model − bpb with layer i restored) is a statistic of the
ablation's probe documents (calibration role). Each bootstrap replicate draws those documents
with replacement — the same draw for the adapted model and every restore, so the harm is paired —
recomputes the harm of every layer and the Spearman ρ of the combined score and of depth against
it. The interval of ρ_combined − ρ_depth decides "beats depth": only when it excludes 0.
The layer scores themselves are weight-only (no documents) and stay fixed.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata

from spear_mm.eval import stats


def harm_draws(per_doc: dict, probe: str, resamples: int, seed: int):
    """(harm (L,), harm replicates (B, L)) of `probe` from the ablation's per-document NLL."""
    nll = np.array(
        [per_doc["adapted"][probe], *(layer[probe] for layer in per_doc["per_layer"])],
        dtype=np.float64,
    )
    nbytes = np.asarray(per_doc["probes"][probe]["bytes"], dtype=np.float64)
    counts = stats.draw_counts(nll.shape[1], resamples, stats.rng_for(seed, f"ablation:{probe}"))
    point, draws = stats.bpb_of(nll, nbytes), stats.bpb_of(nll, nbytes, counts)
    return point[0] - point[1:], draws[:, :1] - draws[:, 1:]


def spearman_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Spearman ρ of the fixed vector `x` (L,) with every row of `y` (B, L) (average ranks);
    NaN where a row is constant."""
    rx = rankdata(x)
    ry = rankdata(np.atleast_2d(y), axis=1)
    rx = rx - rx.mean()
    ry = ry - ry.mean(axis=1, keepdims=True)
    den = np.sqrt((rx**2).sum() * (ry**2).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return (ry @ rx) / den


def rho_intervals(
    score: list[float],
    depth: list[float],
    per_doc: dict,
    *,
    probe: str = "general",
    resamples: int = stats.RESAMPLES,
    seed: int = 0,
) -> dict:
    """Intervals of ρ(score, harm), ρ(depth, harm) and their difference, and the call."""
    harm, draws = harm_draws(per_doc, probe, resamples, seed)
    n = len(per_doc["probes"][probe]["bytes"])
    out = {}
    for key, x in (("combined", score), ("depth", depth)):
        x = np.asarray(x, dtype=np.float64)
        out[f"rho_{key}"] = stats.percentile(
            float(spearman_rows(x, harm)[0]), spearman_rows(x, draws), seed=seed, n=n
        )
    s, d = np.asarray(score, dtype=np.float64), np.asarray(depth, dtype=np.float64)
    diff_draws = spearman_rows(s, draws) - spearman_rows(d, draws)
    diff = out["rho_combined"].value - out["rho_depth"].value
    out["difference"] = stats.percentile(diff, diff_draws, seed=seed, n=n)
    iv = out["difference"]
    out["call"] = (
        "beats depth"
        if iv.lo > 0
        else "does not beat depth"
        if iv.hi < 0
        else "no evidence either way"
    )
    return out
