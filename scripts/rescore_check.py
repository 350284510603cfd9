"""Re-score finished analyses: the shipped default score vs the rank-only one vs depth.

    python scripts/rescore_check.py runs/an-s0-8192/analysis.json runs/an-s1-8192/analysis.json ...

Needs studies run with ablation=true: their per-layer features, the ablation's general harm and
its per-document NLL (`ablation.per_doc`) are stored in analysis.json, so nothing is recomputed.
Prints, per study, Spearman ρ against the ablation's general harm of: depth; the previous
combination Σ w · rank01(feature) with the default weights; the current `combined_score` with the
same weights — each with its 95% interval — and the paired intervals of new − old and new − depth.
The intervals resample the ablation's calibration-role documents (the same draw for every score:
`spear_mm.analyze.uncertainty`), so a difference whose interval excludes 0 is a measured one.
"""

from __future__ import annotations

import argparse

import numpy as np

from spear_mm.analyze.document import AnalysisDoc, read_analysis
from spear_mm.analyze.magnitude import outlier_layers, unchanged_layers
from spear_mm.analyze.uncertainty import harm_draws, spearman_rows
from spear_mm.analyze.validate import DEFAULT_WEIGHTS, ScoreSpec, combined_score, rank01
from spear_mm.eval import stats


def rank_score(features: list[dict], weights: dict[str, float]) -> list[float]:
    """The combination shipped before 2026-12-03: Σ_f w_f · rank01(feature_f)."""
    score = [0.0] * len(features)
    for name, w in weights.items():
        for i, v in enumerate(rank01([f[name] for f in features])):
            score[i] += w * v
    return score


def rho_with_draws(x, harm, draws) -> tuple[float, np.ndarray]:
    x = np.asarray(x, dtype=np.float64)
    return float(spearman_rows(x, harm)[0]), spearman_rows(x, draws)


def fmt(iv: stats.Interval) -> str:
    return f"{iv.value:+.3f} [{iv.lo:+.3f}, {iv.hi:+.3f}]"


def rescore(doc: AnalysisDoc, resamples: int, seed: int) -> dict[str, stats.Interval]:
    feats, per_doc = doc.layers, (doc.ablation or {})["per_doc"]
    harm, draws = harm_draws(per_doc, "general", resamples, seed)
    n = len(per_doc["probes"]["general"]["bytes"])
    scores = {
        "depth": [f["depth"] for f in feats],
        "old": rank_score(feats, DEFAULT_WEIGHTS),
        "new": combined_score(feats, ScoreSpec(dict(DEFAULT_WEIGHTS))),
    }
    rho = {k: rho_with_draws(v, harm, draws) for k, v in scores.items()}
    out = {k: stats.percentile(v, d, seed=seed, n=n) for k, (v, d) in rho.items()}
    for other in ("old", "depth"):
        diff = rho["new"][0] - rho[other][0]
        out[f"new-{other}"] = stats.percentile(diff, rho["new"][1] - rho[other][1], seed=seed, n=n)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("analyses", nargs="+", help="analysis.json files with an ablation")
    ap.add_argument("--resamples", type=int, default=stats.RESAMPLES)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    print(
        "| study | documents | depth | rank-only default | shipped default "
        "| new − old | new − depth | far-out | unchanged |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for path in args.analyses:
        doc = read_analysis(path)
        r = rescore(doc, args.resamples, args.seed)
        feats = doc.layers
        print(
            f"| {path} | {r['new'].n} | {fmt(r['depth'])} | {fmt(r['old'])} | {fmt(r['new'])} "
            f"| {fmt(r['new-old'])} | {fmt(r['new-depth'])} "
            f"| {outlier_layers(feats)} | {unchanged_layers(feats)} |"
        )


if __name__ == "__main__":
    main()
