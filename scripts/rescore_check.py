"""Re-score finished analyses: the magnitude-aware default vs the old rank-based one vs depth.

    python scripts/rescore_check.py runs/an-s0-8192/analysis.json runs/an-s1-8192/analysis.json ...

Needs studies run with ablation=true (their per-layer features and general harm are stored in
analysis.json, so nothing is recomputed). Prints, per study, Spearman ρ against the ablation's
general harm of: depth; the previous combination Σ w · rank01(feature) with the default weights;
the current `combined_score` with the same weights; and the sanity report's far-out / unchanged
layers. No intervals yet: the interval machinery of the "Evidence a user can trust" issue is not
in the package (docs/analyzer.md says so).
"""

from __future__ import annotations

import argparse
import json

from spear_mm.analyze.magnitude import outlier_layers, unchanged_layers
from spear_mm.analyze.validate import (
    DEFAULT_WEIGHTS,
    ScoreSpec,
    combined_score,
    rank01,
    spearman,
)


def rank_score(features: list[dict], weights: dict[str, float]) -> list[float]:
    """The combination shipped before 2026-12-03: Σ_f w_f · rank01(feature_f)."""
    score = [0.0] * len(features)
    for name, w in weights.items():
        for i, v in enumerate(rank01([f[name] for f in features])):
            score[i] += w * v
    return score


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("analyses", nargs="+", help="analysis.json files with an ablation")
    args = ap.parse_args()
    print("| study | depth | rank-based default | magnitude-aware default | far-out | unchanged |")
    print("|---|---|---|---|---|---|")
    for path in args.analyses:
        with open(path, encoding="utf-8") as fh:
            doc = json.load(fh)
        feats, harm = doc["layers"], doc["ablation"]["harm"]["general"]
        depth = spearman([f["depth"] for f in feats], harm)
        old = spearman(rank_score(feats, DEFAULT_WEIGHTS), harm)
        new = spearman(combined_score(feats, ScoreSpec(dict(DEFAULT_WEIGHTS))), harm)
        print(
            f"| {path} | {depth:+.3f} | {old:+.3f} | {new:+.3f} | "
            f"{outlier_layers(feats)} | {unchanged_layers(feats)} |"
        )


if __name__ == "__main__":
    main()
