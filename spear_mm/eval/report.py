"""Plain-text table of an `evaluate()` results dict (what `spear-mm eval` prints)."""

from __future__ import annotations


def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def format_table(results: dict) -> str:
    """One row per task: primary metric, score, direction, documents, cached, stderr."""
    header = ("task", "metric", "score", "±stderr", "better", "docs", "cached")
    rows = [header]
    for task, entry in results["tasks"].items():
        metric = entry.get("primary") or "-"
        stderr = entry.get("metrics", {}).get(f"{metric.split(',')[0]}_stderr")
        hib = entry.get("higher_is_better")
        docs = (entry.get("n_samples") or {}).get("effective")
        rows.append(
            (
                task,
                metric,
                _fmt(entry.get("score")),
                _fmt(stderr),
                "-" if hib is None else ("higher" if hib else "lower"),
                _fmt(docs),
                "yes" if entry.get("cached") else "no",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    model = results.get("model", {})
    lines.append(f"model {model.get('source')}  fingerprint {model.get('fingerprint')}")
    return "\n".join(lines)
