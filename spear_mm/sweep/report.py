"""Write sweep.csv and sweep.json (each atomically: a reader never sees half a file)."""

from __future__ import annotations

import csv
import io
import json
import math
import statistics
from collections.abc import Sequence
from pathlib import Path

from spear_mm.io.atomic import atomic_write_text
from spear_mm.sweep.points import SweepPoint, finite_or_none

MERGE_SHARE_LIMIT = 0.05
CSV_FIXED = [
    "family",
    "role",
    "knob",
    "label",
    "recipe",
    "mean_t",
    "general_bpb",
    "finance_bpb",
    "retention",
    "gain_kept",
    "recovered",
    "on_frontier",
    "merge_s",
    "eval_s",
    "merge_share",
]


def point_record(p: SweepPoint, on_frontier: bool) -> dict:
    """The JSON record of one point (NaN → null, with the metric's reason in `undefined`)."""
    return {
        "family": p.family,
        "role": p.role,
        "knob": p.knob,
        "label": p.label,
        "recipe": p.recipe,
        "mean_t": finite_or_none(p.mean_t),
        "layer_t": p.layer_t,
        "nonlayer_t": p.nonlayer_t,
        "raw": {k: finite_or_none(v) for k, v in p.raw.items()},
        "scores": {k: finite_or_none(v) for k, v in p.scores.items()},
        "undefined": dict(p.reasons),
        "on_frontier": on_frontier,
        "nll_per_doc": p.docs,
        "timings": {
            "merge_s": round(p.merge_s, 4),
            "eval_s": round(p.eval_s, 4),
            "merge_share": finite_or_none(p.merge_share),
        },
    }


def timing_summary(points: Sequence[SweepPoint]) -> dict:
    """Merge vs eval time over the merged points (replay, not merged, is left out)."""
    merged = [p for p in points if p.recipe is not None and p.eval_s > 0]
    shares = [p.merge_share for p in merged if math.isfinite(p.merge_share)]
    if not shares:
        return {"points": 0}
    return {
        "points": len(merged),
        "merge_s_median": statistics.median(p.merge_s for p in merged),
        "eval_s_median": statistics.median(p.eval_s for p in merged),
        "merge_share_median": statistics.median(shares),
        "merge_share_max": max(shares),
        "limit": MERGE_SHARE_LIMIT,
        "merge_within_limit": max(shares) <= MERGE_SHARE_LIMIT,
        "total_s": sum(p.merge_s + p.eval_s for p in points),
    }


def _fmt(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return "" if not math.isfinite(value) else f"{value + 0.0:.6g}"  # + 0.0: no "-0"
    return str(value)


def write_csv(path: Path, points: Sequence[SweepPoint], frontier: set[int]) -> None:
    extra = sorted({k for p in points for k in [*p.raw, *p.scores]} - set(CSV_FIXED))
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_FIXED + extra)
    for i, p in enumerate(points):
        row = {
            "family": p.family,
            "role": p.role,
            "knob": p.knob,
            "label": p.label,
            "recipe": p.recipe,
            "mean_t": p.mean_t,
            "on_frontier": int(i in frontier),
            "merge_s": round(p.merge_s, 4),
            "eval_s": round(p.eval_s, 4),
            "merge_share": p.merge_share,
            **p.raw,
            **p.scores,
        }
        writer.writerow([_fmt(row.get(k)) for k in CSV_FIXED + extra])
    atomic_write_text(path, buf.getvalue())


def write_json(path: Path, doc: dict) -> None:
    atomic_write_text(path, json.dumps(doc, indent=1, allow_nan=False) + "\n")
