"""The report's test-role trade-off plot: every table row (base, plain CPT, replay baselines,
policies, selected and uniform recipes) at its general and finance bits per byte, with the 95%
intervals as error bars. Lower is better on both axes, so the best models sit bottom-left."""

from __future__ import annotations

from pathlib import Path

from spear_mm.io.atomic import save_figure

MARKERS = {"base": ("s", "black"), "adapted": ("D", "black"), "uniform": ("^", "tab:gray")}


def _err(ci: dict | None, value: float) -> tuple[float, float]:
    if not ci or ci.get("lo") is None or ci.get("hi") is None:
        return 0.0, 0.0
    return max(0.0, value - ci["lo"]), max(0.0, ci["hi"] - value)


def draw_table(rows: list[dict], path: Path, title: str = "") -> None:
    """Write the plot of `rows` (compare.json rows with `ci`) to `path` (PNG, atomically)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 6), dpi=120)
    seen = set()
    for i, row in enumerate(rows):
        x, y = row["general_bpb"], row["finance_bpb"]
        if row.get("seconds") == 0.0 and (x, y) in seen:  # a row that repeats another's recipe
            continue
        seen.add((x, y))
        ci = row.get("ci") or {}
        xe, ye = _err(ci.get("general_bpb"), x), _err(ci.get("finance_bpb"), y)
        rid = row["id"]
        marker, color = MARKERS.get(rid, ("o", f"C{i % 10}"))
        if rid.startswith("replay_"):
            marker, color = "P", "tab:green"
        ax.errorbar(
            x,
            y,
            xerr=[[xe[0]], [xe[1]]],
            yerr=[[ye[0]], [ye[1]]],
            fmt=marker,
            color=color,
            ms=8,
            capsize=3,
            label=row["model"],
        )
    ax.set_xlabel("general bits per byte (test role; lower = less forgetting)")
    ax.set_ylabel("finance bits per byte (test role; lower = more domain gain)")
    ax.set_title(title or "Every model of the table, with 95% intervals", fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="best", framealpha=0.85)
    save_figure(fig, path)
