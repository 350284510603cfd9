"""frontier.png: general retention (or forgetting recovered) against domain gain kept.

One colour and line per recipe family (its points in knob order, from the adapted model at knob 0
to the base at knob 1), each point labelled with its knob; baselines as large black markers; the
Pareto frontier as a wide grey band; the target as a red horizontal line; the selected point
ringed. Matplotlib's Agg backend, so it runs headless.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from spear_mm.io.atomic import save_figure
from spear_mm.sweep.points import SweepPoint

COLORS = {"uniform": "#1f77b4", "depth": "#2ca02c", "analyzer": "#d62728", "topk": "#9467bd"}
BASELINE_MARKERS = {
    "adapted": ("X", "adapted (CPT)"),
    "base": ("*", "base"),
    "replay": ("D", "replay"),
}
AXIS_LABELS = {
    "retention": "general retention (base bpb / model bpb)",
    "recovered": "general forgetting recovered",
}


def _ok(p: SweepPoint, y: str) -> bool:
    return math.isfinite(p.get("gain_kept")) and math.isfinite(p.get(y))


def _draw_families(ax, points: Sequence[SweepPoint], y: str, ends: list[SweepPoint]) -> None:
    for fam, color in COLORS.items():
        own = [p for p in points if p.family == fam and _ok(p, y)]
        if not own:
            continue
        line = sorted([*own, *[e for e in ends if _ok(e, y)]], key=lambda p: p.knob)
        ax.plot(
            [p.get("gain_kept") for p in line],
            [p.get(y) for p in line],
            "-",
            color=color,
            lw=1.2,
            alpha=0.6,
            zorder=2,
        )
        for p in own:
            marker = "o" if p.role == "grid" else "."
            ax.plot(p.get("gain_kept"), p.get(y), marker, color=color, ms=6, zorder=3)
            if p.role == "grid":
                ax.annotate(
                    f"{p.knob:g}",
                    (p.get("gain_kept"), p.get(y)),
                    fontsize=7,
                    color=color,
                    xytext=(4, 3),
                    textcoords="offset points",
                )
        ax.plot([], [], "o-", color=color, label=fam)
    if any(p.role == "refined" for p in points):
        ax.plot([], [], ".", color="0.3", label="refined by bisection")


def draw_frontier(
    points: Sequence[SweepPoint],
    path: Path,
    *,
    y: str,
    frontier: Sequence[SweepPoint],
    target: tuple[str, float] | None = None,
    selected: SweepPoint | None = None,
    title: str = "",
) -> None:
    """Write the plot of `points` to `path` (PNG) with `y` (retention | recovered) on the y axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 6.5), dpi=120)
    ends = [p for p in points if p.family in ("adapted", "base")]
    _draw_families(ax, points, y, ends)
    front = sorted([p for p in frontier if _ok(p, y)], key=lambda p: p.get("gain_kept"))
    if front:
        ax.plot(
            [p.get("gain_kept") for p in front],
            [p.get(y) for p in front],
            "-",
            color="0.5",
            lw=7,
            alpha=0.35,
            solid_capstyle="round",
            zorder=1,
            label="Pareto frontier (all points)",
        )
    for fam, (marker, label) in BASELINE_MARKERS.items():
        for p in points:
            if p.family == fam and _ok(p, y):
                ax.plot(
                    p.get("gain_kept"),
                    p.get(y),
                    marker,
                    color="black",
                    ms=13,
                    zorder=4,
                    label=label,
                )
    if target is not None and target[0] == y:
        ax.axhline(
            target[1], color="red", lw=1.2, ls=":", zorder=1, label=f"target {y} = {target[1]:g}"
        )
    if selected is not None and _ok(selected, y):
        ax.plot(
            selected.get("gain_kept"),
            selected.get(y),
            "o",
            ms=18,
            mfc="none",
            mec="red",
            mew=2,
            zorder=5,
            label=f"selected: {selected.label}",
        )
    ax.set_xlabel("domain gain kept (finance bits-per-byte)")
    ax.set_ylabel(AXIS_LABELS.get(y, y))
    ax.set_title(
        title or "spear-mm sweep: labels are knob values (0 = adapted, 1 = base)", fontsize=10
    )
    ax.grid(True, alpha=0.3)
    if ax.get_legend_handles_labels()[1]:
        ax.legend(fontsize=8, loc="best", framealpha=0.85)
    save_figure(fig, path)
