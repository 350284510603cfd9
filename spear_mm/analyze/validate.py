"""Rank statistics, the combined score, and how well weight signals predict the ablation (pure).

The combined weight-only score is ``Σ_f w_f · rank01(feature_f) + guard · Σ|w| · lift`` over layer
features (see ``aggregate.layer_features``): ranks over the layers that changed in the bulk, and
``lift`` — how far a layer's overall change lies beyond Tukey's far-out fence, in units of the
change's spread (``magnitude.outlier_lift``; 0 for ordinary layers) — so a layer that moved far
more than the rest keeps its magnitude and goes to the top. Layers whose tensors did not change at
all score below every layer that did. A ``ScoreSpec`` can be fitted on one study (``fit_spec``)
and applied unchanged to another (``score_spec=FILE``); every report says whether the spec was
fitted on the data it is scored on (``in_sample``). Reasoning and the three-seed re-check:
docs/analyzer.md §3.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from spear_mm.analyze.magnitude import changed_layers, outlier_lift
from spear_mm.errors import UserError

# The shipped default: depth (earliest layers first) plus the relative drift of the MLP up
# projection, equal weights. Chosen among simple specs on two SmolLM2 CPT seeds (8192-token
# ablations) and then checked on a third it had not seen: rho 0.73 / 0.68 / 0.79 against depth's
# 0.66 / 0.57 / 0.71 (docs/benchmarks.md, ## Analyze). Models without an MLP up projection fall
# back to depth alone (FALLBACK_WEIGHTS). Replace it with a spec checked on your own studies
# (score_spec=FILE). Re-checked on 2026-12-03 on three new CPT seeds with calibration-role
# ablations (docs/analyzer.md §3): the bulk stays rank-based because robust (IQR) scaling there
# lost to ranks on one seed with an interval excluding 0 and won on none.
DEFAULT_WEIGHTS = {"depth": 1.0, "rel_drift:mlp_up": 1.0}
FALLBACK_WEIGHTS = {"depth": 1.0}
WEIGHT_GRID = (0.0, 0.25, 0.5, 1.0)
# How features enter the score; part of the pipeline's analyze-stage key, so a change of the
# scaling recomputes cached analyses.
SCORE_SCALE = "rank-bulk+far-out-lift+unchanged-last/2"


@dataclass
class ScoreSpec:
    """Weights of the combined score over layer features (ranked in the bulk, far-out lifted).

    ``outlier_guard`` weighs the far-out lift (in units of Σ|w|): 1 lifts a layer whose overall
    change is far out to the top whatever the features; 0 leaves the ranking to the features.
    """

    weights: dict[str, float]
    fitted_on: str = "default"
    fit_rho: float | None = None
    notes: list[str] = field(default_factory=list)
    outlier_guard: float = 1.0

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def load(cls, path: str | Path) -> ScoreSpec:
        """Read a spec from a JSON file (or an analysis.json, taking its ``score_spec``)."""
        p = Path(path)
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise UserError(f"score_spec {p}: cannot read JSON ({exc}); pass a spec file") from None
        if isinstance(data, dict) and "schema_version" in data:  # an analysis.json: its spec
            from spear_mm.analyze.document import analysis_from

            data = analysis_from(data, p).score_spec or {}
        weights = data.get("weights") if isinstance(data, dict) else None
        if not isinstance(weights, dict) or not weights:
            raise UserError(f"score_spec {p}: no 'weights' mapping; write {{'weights': {{...}}}}")
        return cls(
            {str(k): float(v) for k, v in weights.items()},
            str(data.get("fitted_on", p)),
            data.get("fit_rho"),
            list(data.get("notes", [])),
            float(data.get("outlier_guard", 1.0)),
        )


def ranks(values: list[float]) -> list[float]:
    """Average ranks (1-based; ties share the mean rank), as Spearman's ρ needs."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    out = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            out[order[k]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return out


def spearman(x: list[float], y: list[float]) -> float:
    """Spearman's ρ (Pearson on average ranks); 0 when either side is constant or n < 2."""
    if len(x) != len(y):
        raise ValueError("spearman: length mismatch")
    n = len(x)
    if n < 2:
        return 0.0
    rx, ry = ranks(x), ranks(y)
    mx, my = sum(rx) / n, sum(ry) / n
    sxy = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    sxx = sum((a - mx) ** 2 for a in rx)
    syy = sum((b - my) ** 2 for b in ry)
    if sxx == 0.0 or syy == 0.0:
        return 0.0
    return sxy / (sxx * syy) ** 0.5


def partial_spearman(x: list[float], y: list[float], z: list[float]) -> float:
    """Spearman ρ of x and y with z (e.g. depth) partialled out; 0 when z explains x or y fully.

    ρ_xy·z = (ρ_xy − ρ_xz ρ_yz) / √((1 − ρ_xz²)(1 − ρ_yz²)): does a signal say anything about the
    harm that depth does not already say?
    """
    rxy, rxz, ryz = spearman(x, y), spearman(x, z), spearman(y, z)
    den = ((1.0 - rxz**2) * (1.0 - ryz**2)) ** 0.5
    return (rxy - rxz * ryz) / den if den > 1e-12 else 0.0


def rank01(values: list[float]) -> list[float]:
    """Ranks scaled to [0, 1]; a constant feature maps to 0.5 everywhere."""
    n = len(values)
    if n < 2:
        return [0.5] * n
    return [(r - 1.0) / (n - 1.0) for r in ranks(values)]


def default_spec(features: list[dict[str, float]]) -> ScoreSpec:
    """DEFAULT_WEIGHTS when the model has every feature they use, else FALLBACK_WEIGHTS (noted)."""
    if features and all(name in f for f in features for name in DEFAULT_WEIGHTS):
        return ScoreSpec(dict(DEFAULT_WEIGHTS))
    missing = sorted({n for n in DEFAULT_WEIGHTS if any(n not in f for f in features)})
    return ScoreSpec(
        dict(FALLBACK_WEIGHTS),
        notes=[f"default score without {', '.join(missing)} (not in this model): depth alone"],
    )


def combined_score(features: list[dict[str, float]], spec: ScoreSpec) -> list[float]:
    """Per-layer combined score; a feature the study lacks is an error naming it.

    Ranks are taken over the layers that changed; a far-out layer gets its lift on top; a layer
    that did not change at all scores 1 below the lowest changed layer, so every ranking puts it
    last (all layers unchanged: all 0).
    """
    live = changed_layers(features)
    score = [0.0] * len(features)
    for name, w in spec.weights.items():
        if w == 0.0:
            continue
        if any(name not in f for f in features):
            have = ", ".join(sorted(features[0])) if features else "none"
            raise UserError(
                f"score_spec feature '{name}' not computed for this model; have: {have}"
            )
        for i, v in zip(live, rank01([features[i][name] for i in live])):
            score[i] += w * v
    guard = spec.outlier_guard * sum(abs(w) for w in spec.weights.values())
    if guard:
        score = [s + guard * lift for s, lift in zip(score, outlier_lift(features))]
    if len(live) < len(features):
        floor = min((score[i] for i in live), default=1.0) - 1.0
        still = set(range(len(features))) - set(live)
        score = [floor if i in still else s for i, s in enumerate(score)]
    return score


def ranking(score: list[float]) -> list[int]:
    """Layer indices from highest to lowest score; ties broken by earlier layer first."""
    return sorted(range(len(score)), key=lambda i: (-score[i], i))


def signal_correlations(
    features: list[dict[str, float]], harm: list[float], control: str | None = None
) -> dict[str, float]:
    """Spearman ρ of every layer feature against the per-layer harm (partial on ``control``)."""
    names = sorted(set().union(*features)) if features else []
    if control is None:
        return {n: spearman([f.get(n, 0.0) for f in features], harm) for n in names}
    z = [f[control] for f in features]
    return {
        n: partial_spearman([f.get(n, 0.0) for f in features], harm, z)
        for n in names
        if n != control
    }


def fit_spec(
    features: list[dict[str, float]],
    harm: list[float],
    *,
    max_features: int = 3,
    candidates: list[str] | None = None,
    label: str = "fit",
) -> ScoreSpec:
    """Greedy forward selection of ≤ ``max_features`` features with grid weights, maximising ρ.

    Deterministic (features tried in sorted order, ties keep the earlier choice). Start from the
    best single feature; add a feature at a grid weight only when it raises ρ by > 0.01, which keeps
    the spec small enough to transfer to another study.
    """
    names = candidates or sorted(set().union(*features))
    best = ScoreSpec({}, label, -2.0)
    for n in names:
        rho = spearman([f[n] for f in features], harm) if all(n in f for f in features) else -2.0
        if rho > best.fit_rho:
            best = ScoreSpec({n: 1.0}, label, rho)
    while len(best.weights) < max_features:
        step = best
        for n in names:
            if n in best.weights or not all(n in f for f in features):
                continue
            for w in WEIGHT_GRID[1:]:
                spec = ScoreSpec({**best.weights, n: w}, label)
                rho = spearman(combined_score(features, spec), harm)
                if rho > step.fit_rho + 0.01:
                    step = ScoreSpec(spec.weights, label, rho)
        if step is best:
            break
        best = step
    return best
