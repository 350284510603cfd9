"""merge_report.json: per-tensor t, cosine and path, plus a summary.

The report holds nothing that varies between runs (no times, thread counts or absolute temp
paths), so two runs of the same merge write identical reports.
"""

from __future__ import annotations

from collections import Counter

from spear_mm import __version__


def summarize(entries: dict[str, dict]) -> dict:
    """Counts by path, SLERP fallbacks, and the cosine range of computed tensors."""
    paths = Counter(e["path"] for e in entries.values())
    cosines = [e["cos"] for e in entries.values() if e.get("cos") is not None]
    return {
        "tensors": len(entries),
        "paths": dict(sorted(paths.items())),
        "slerp_fallbacks": sum(1 for e in entries.values() if e.get("fallback")),
        "min_cos": min(cosines) if cosines else None,
        "max_cos": max(cosines) if cosines else None,
    }


def build_report(job, entries: dict[str, dict]) -> dict:
    """The report for a finished MergeJob (see spear_mm.merge.executor)."""
    recipe = job.recipe
    vocab = {}
    for name, entry in entries.items():
        if entry.get("new_rows"):
            vocab[name] = entry["new_rows"]
    return {
        "spear_mm_version": __version__,
        "recipe": str(recipe.source) if recipe.source else None,
        "format": recipe.format,
        "base": str(job.base.folder),
        "adapted": str(job.adapted.folder),
        "num_layers": job.num_layers,
        "tied_embeddings": job.tied,
        "vocab_growth": {
            "policy": "shared rows merged, new rows kept from adapted",
            "new_rows": vocab,
        }
        if vocab
        else None,
        "unmatched_rules": list(recipe.unmatched),
        "unclassified_tensors": list(recipe.unclassified),
        "summary": summarize(entries),
        "tensors": {name: entries[name] for name in job.names},
    }
