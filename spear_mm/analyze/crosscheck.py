"""Out-of-sample check of combined-score specs across studies (two or more analysis.json).

    python -m spear_mm.analyze.crosscheck runs/analyze-A/analysis.json runs/analyze-B/analysis.json

Every study must have been run with ``ablation=true``. For each study it prints the ρ (vs that
study's per-layer general harm) of: the depth baseline, the spec the study was scored with, and
every other study's fitted spec (``fitted_spec``, present with ``fit=true``) — the out-of-sample
numbers — plus the study's own fitted spec (in-sample, marked so), and the selection quality at
each k. Output is a Markdown table, ready for docs/benchmarks.md.
"""

from __future__ import annotations

import sys

from spear_mm.analyze.document import AnalysisDoc, read_analysis
from spear_mm.analyze.validate import ScoreSpec, combined_score, spearman
from spear_mm.errors import UserError


def _load(path: str) -> AnalysisDoc:
    doc = read_analysis(path)
    if not doc.ablation or not doc.validation or doc.harm("general") is None:
        raise UserError(f"{path}: no general-probe ablation; rerun that study with ablation=true")
    return doc


def rho_of(spec: ScoreSpec, doc: AnalysisDoc) -> float:
    """ρ of ``spec``'s combined score on a study vs its per-layer general harm."""
    return spearman(combined_score(doc.layers, spec), doc.harm("general"))


def rows(paths: list[str]) -> list[str]:
    docs = [_load(p) for p in paths]
    fitted = [(p, ScoreSpec(**d.fitted_spec)) for p, d in zip(paths, docs) if d.fitted_spec]
    out = ["| study | spec | fitted on | in-sample | ρ vs general harm |", "|---|---|---|---|---|"]
    for path, doc in zip(paths, docs):
        val = doc.validation
        out.append(f"| {path} | depth baseline | — | — | {val['rho_depth']:+.3f} |")
        used = ScoreSpec(**doc.score_spec)
        same = used.fitted_on == doc.inputs.get("adapted")
        out.append(
            f"| {path} | used: {used.weights} | {used.fitted_on} | {'yes' if same else 'no'} "
            f"| {val['rho_combined']:+.3f} |"
        )
        for fpath, spec in fitted:
            insample = fpath == path
            out.append(
                f"| {path} | fitted: {spec.weights} | {fpath} | {'yes' if insample else 'no'} "
                f"| {rho_of(spec, doc):+.3f} |"
            )
    out.append("")
    out.append("| study | k | method | layers | recovered | gain kept | vs ablation |")
    out.append("|---|---|---|---|---|---|---|")
    for path, doc in zip(paths, docs):
        for k, methods in (doc.validation.get("selection") or {}).items():
            for m, q in methods.items():
                ratio = q["ratio_vs_ablation"]
                out.append(
                    f"| {path} | {k} | {m} | {q['layers']} | {q['recovered']:.3f} | "
                    f"{q['gain_kept']:.3f} | {'' if ratio is None else f'{ratio:.2f}'} |"
                )
    return out


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args:
        print(__doc__)
        return 2
    print("\n".join(rows(args)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
