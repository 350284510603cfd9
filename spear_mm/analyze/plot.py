"""layer_impact.png: layers × kinds drift heatmap beside the per-layer score (and ablation harm)."""

from __future__ import annotations

import math
from pathlib import Path

from spear_mm.io.atomic import save_figure


def _title(doc: dict) -> str:
    val = doc.get("validation")
    if not val:
        return "Layer impact (weights only; run with ablation=true to validate)"
    prior = f", reference-ablation prior {val['rho_prior']:+.2f}" if "rho_prior" in val else ""
    return (
        f"Spearman ρ vs ablation general harm: combined {val['rho_combined']:+.2f}, "
        f"depth baseline {val['rho_depth']:+.2f}{prior}"
    )


def _norm(values: list[float]) -> list[float]:
    top = max((abs(v) for v in values), default=0.0)
    return [v / top if top > 0 else 0.0 for v in values]


def plot_layer_impact(doc: dict, path: Path) -> None:
    """Draw the figure from analysis.json's dict into ``path`` (PNG, Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table, kinds = doc["kind_table_rel_drift"], doc["kinds"]
    n = len(table)
    grid = [[math.log10(v) if v and v > 0 else math.nan for v in row] for row in table]
    fig, (ax1, ax2) = plt.subplots(
        1,
        2,
        figsize=(11, max(4.0, 0.28 * n + 1.8)),
        gridspec_kw={"width_ratios": [1.3, 1]},
        sharey=True,
    )
    im = ax1.imshow(grid, aspect="auto", cmap="viridis", interpolation="nearest")
    ax1.set_xticks(range(len(kinds)), kinds, rotation=45, ha="right")
    ax1.set_yticks(range(n), [str(i) for i in range(n)])
    ax1.set_ylabel("layer")
    ax1.set_title("relative drift ‖ΔW‖/‖W‖ per kind (log10)")
    fig.colorbar(im, ax=ax1, fraction=0.046, pad=0.02)
    score = _norm(doc["combined_score"])
    ax2.barh(
        [i - 0.2 for i in range(n)],
        score,
        height=0.4,
        color="tab:orange",
        label="combined weight score (scaled)",
    )
    abl = doc.get("ablation")
    if abl and "general" in abl["harm"]:
        ax2.barh(
            [i + 0.2 for i in range(n)],
            _norm(abl["harm"]["general"]),
            height=0.4,
            color="tab:blue",
            label="ablation: general harm (scaled)",
        )
    rank_of = {layer: r + 1 for r, layer in enumerate(doc["layer_ranking"])}
    for i in range(n):
        ax2.text(1.02, i, f"#{rank_of[i]}", va="center", fontsize=7)
    ax2.set_xlim(min(0.0, *score, 0) - 0.05, 1.15)
    ax2.axvline(0, color="grey", lw=0.5)
    ax2.set_title("per-layer ranking (#1 = restore first)")
    # Below the axes: inside it would cover the bars of the last layers.
    ax2.legend(loc="upper center", bbox_to_anchor=(0.5, -0.1), fontsize=7, ncol=2, frameon=False)
    if not ax1.yaxis_inverted():  # layer 0 on top (imshow already inverts the shared axis)
        ax1.invert_yaxis()
    fig.suptitle(_title(doc), fontsize=10)
    save_figure(fig, path, dpi=110)
