"""One evaluated sweep point and the scores derived from its raw probe results.

Raw scores are bits-per-byte (lower is better) of the `general` and `finance` probes, plus any
lm-eval suite metrics (higher is better) when a suite is asked for. The derived, scale-free scores
use `spear_mm.eval.metrics` — the eval layer's definitions, not re-implemented here:

- ``retention``  general retention, base_bpb / model_bpb (1.0 = like the base);
- ``gain_kept``  domain gain kept on finance bpb, (model − base) / (adapted − base);
- ``recovered``  forgetting recovered on general bpb, (adapted − model) / (adapted − base).

A ratio that has no meaning (the adapted model did not forget, or did not gain) is the eval
layer's `Undefined` (a NaN with a reason); it is written as null in JSON with the reason beside it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from spear_mm.eval import metrics

DERIVED = ("retention", "gain_kept", "recovered")
METRIC_OF_TARGET = {"retention": "retention", "recovered": "recovered"}


@dataclass
class SweepPoint:
    """A row of sweep.csv: what was merged (family, knob, recipe), its scores and timings.

    `family` is a recipe family (uniform, depth, analyzer, topk) or a baseline (adapted, base,
    replay); `role` is ``grid``, ``refined`` (added by the solver's bisection) or ``baseline``.
    """

    family: str
    knob: float | None
    role: str
    raw: dict[str, float]
    recipe: str | None = None
    scores: dict[str, float] = field(default_factory=dict)
    merge_s: float = 0.0
    eval_s: float = 0.0
    layer_t: list[float] | None = None
    nonlayer_t: float | None = None
    reasons: dict[str, str] = field(default_factory=dict)
    docs: dict[str, list[float]] = field(default_factory=dict)  # probe → per-document NLL

    @property
    def label(self) -> str:
        if self.knob is None or self.role == "baseline":
            return self.family
        return f"{self.family}@{self.knob:.3g}"

    @property
    def mean_t(self) -> float | None:
        """Mean adapted weight over the layers (1 = adapted, 0 = base); None for replay."""
        return sum(self.layer_t) / len(self.layer_t) if self.layer_t else None

    @property
    def merge_share(self) -> float:
        """Merge time as a fraction of evaluation time (the issue asks for <= 5%)."""
        return self.merge_s / self.eval_s if self.eval_s > 0 else math.nan

    def get(self, key: str) -> float:
        return self.scores.get(key, math.nan)


def derive_scores(
    raw: dict[str, float],
    base: dict[str, float],
    adapted: dict[str, float],
    higher_is_better: dict[str, bool] | None = None,
):
    """(scores, reasons): retention / gain_kept / recovered from bpb, plus per-suite retention.

    Suite metrics (keys other than the two bpb probes) get ``retention:<task>`` in the direction
    `higher_is_better[key]` (default: higher is better).
    """
    higher = higher_is_better or {}
    g, f = "general_bpb", "finance_bpb"
    scores = {
        "retention": metrics.retention(raw[g], base[g], higher_is_better=False),
        "gain_kept": metrics.gain_kept(raw[f], base[f], adapted[f], higher_is_better=False),
        "recovered": metrics.forgetting_recovered(
            raw[g], base[g], adapted[g], higher_is_better=False
        ),
    }
    for key, value in raw.items():
        if key not in (g, f) and key in base:
            scores[f"retention:{key}"] = metrics.retention(
                value, base[key], higher_is_better=higher.get(key, True)
            )
    reasons = {k: v.reason for k, v in scores.items() if isinstance(v, metrics.Undefined)}
    return {k: float(v) for k, v in scores.items()}, reasons


def finite_or_none(value: float | None):
    """JSON-safe number: None for NaN/inf (the reason is written beside it)."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None
