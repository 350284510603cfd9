"""The analyzer's layer ranking, read from `analysis.json` through its one reader.

`spear_mm.analyze.document.read_analysis` checks the file's schema version and types; here the
ranking (layer indices, most general harm first) must name every layer 0..L−1 exactly once, or
a `UserError` says what was found. The combined score, when present, is kept for the report.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from spear_mm.analyze.document import AnalysisDoc, read_analysis
from spear_mm.errors import UserError


@dataclass(frozen=True)
class LayerRanking:
    """Layers in restore order (most general harm first), their scores if known, and the key."""

    order: tuple[int, ...]
    scores: tuple[float, ...] | None
    source: str


def ranking_of(doc: AnalysisDoc) -> LayerRanking:
    """The ranking of an analysis document (`layer_ranking`, scores from `combined_score`)."""
    scores = tuple(doc.combined_score) if doc.combined_score else None
    return LayerRanking(tuple(doc.layer_ranking), scores, "layer_ranking")


def load_ranking(path: str | Path, num_layers: int) -> LayerRanking:
    """Read and check the ranking of `path` against a model with `num_layers` blocks."""
    ranking = ranking_of(read_analysis(path))
    if sorted(ranking.order) != list(range(num_layers)):
        raise UserError(
            f"{ranking.source} in {path} ranks {len(ranking.order)} layers "
            f"{list(ranking.order)[:8]}...; the model has layers 0..{num_layers - 1} — was the "
            "analysis run on this base/adapted pair?"
        )
    return ranking


def unchanged_layers(
    base_state: Mapping[str, torch.Tensor], adapted_state: Mapping[str, torch.Tensor], n: int
) -> tuple[int, ...]:
    """Blocks whose every tensor is identical (as fp32) in the two weight sets the sweep merges.

    Read from the weights themselves, not from analysis.json, so an analysis of another pair can
    never make the sweep skip a layer that changed here.
    """
    from spear_mm.io.archmap import classify

    seen, changed = set(), set()
    for name, a in adapted_state.items():
        layer = classify(name).layer
        if layer is None or layer in changed:
            continue
        seen.add(layer)
        b = base_state.get(name)
        if b is None or b.shape != a.shape or not torch.equal(b.float(), a.float()):
            changed.add(layer)
    return tuple(i for i in range(n) if i in seen and i not in changed)


def inert_last(ranking: LayerRanking, inert: tuple[int, ...], notes: list[str]) -> LayerRanking:
    """The ranking with unchanged layers moved to the end (an analysis from before the
    magnitude-aware score could rank them first); says so in ``notes`` when it moved any."""
    if not inert:
        return ranking
    still = set(inert)
    order = [i for i in ranking.order if i not in still] + [i for i in ranking.order if i in still]
    if tuple(order) != ranking.order:
        notes.append(
            f"layers {', '.join(map(str, inert))} are identical in base and adapted: moved to the "
            "end of the analyzer's ranking (restoring them is a no-op)"
        )
    return replace(ranking, order=tuple(order))
