#!/usr/bin/env python
"""Selection quality of a score spec on a study that already has its ablation, without redoing it.

Reads a study's `analysis.json` (run with `ablation=true`), ranks its layers with `--score-spec`,
restores each top-k set jointly in the adapted model and measures the same probes, then prints
the fraction of the ablation picks' forgetting recovery it reaches and the domain gain kept (the
`validation.selection` numbers `spear-mm analyze` writes, for a spec that study was not scored
with). The adapted model is measured once first and must reproduce the study's stored value.

    .venv/bin/python scripts/selection_check.py runs/an-s1-8192/analysis.json \\
        --score-spec recipes/score_spec_depth_mlp_up.json --max-tokens 8192
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> int:
    from spear_mm.analyze.ablation import Ablation, LayerRestorer, selection_quality
    from spear_mm.analyze.config import AnalyzeConfig, ProbeConfig
    from spear_mm.analyze.document import read_analysis
    from spear_mm.analyze.run import _measure_fn
    from spear_mm.analyze.validate import ScoreSpec, combined_score, ranking
    from spear_mm.io.checkpoint import CheckpointReader
    from spear_mm.io.sources import load_model

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("analysis")
    ap.add_argument("--score-spec", required=True)
    ap.add_argument("--k", type=int, nargs="+", default=[3, 6, 10])
    ap.add_argument("--max-tokens", type=int, default=8192)
    ap.add_argument("--seq-len", type=int, default=256)
    args = ap.parse_args()

    doc = read_analysis(args.analysis)
    abl = doc.ablation or {}
    spec = ScoreSpec.load(args.score_spec)
    order = ranking(combined_score(doc.layers, spec))
    probe = ProbeConfig(max_tokens=args.max_tokens, seq_len=args.seq_len, autocast_bf16=True)
    base_dir, adapted_dir = doc.inputs["base"], doc.inputs["adapted"]
    cfg = AnalyzeConfig(base=base_dir, adapted=adapted_dir, out="", probe=probe)
    with CheckpointReader(base_dir) as base, CheckpointReader(adapted_dir) as adapted:
        model, tok = load_model(adapted_dir, dtype="float32")
        n = len(doc.layers)
        runner = Ablation(
            model, LayerRestorer(model, base, adapted), _measure_fn(cfg, tok), n, use_cache=False
        )
        again = runner.measure(model)
        drift = max(abs(again[k] - abl["adapted"][k]) for k in again)
        print(f"adapted re-measured: {again} (stored {abl['adapted']}, max diff {drift:.2e})")
        if drift > 1e-4:
            raise SystemExit("the probes do not reproduce the study's numbers: check --max-tokens")
        picks = {f"spec@{k}": order[:k] for k in args.k}
        runner.result = {"selections": {}}
        measured = runner.run_selections(picks)
    study = {**abl, "selections": {**abl["selections"], **measured}}
    print(f"spec {spec.weights} on {args.analysis}")
    print("| k | spec picks | recovered / ablation's | gain kept (ablation's) |")
    print("|---|---|---|---|")
    for k in args.k:
        q = selection_quality(study, k, "general", "finance")
        s, a = q["spec"], q["ablation"]
        print(
            f"| {k} | {s['layers']} | {s['ratio_vs_ablation']:.2f} | "
            f"{s['gain_kept']:.2f} ({a['gain_kept']:.2f}) |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
