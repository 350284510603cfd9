"""Read the analyzer's layer ranking from `analysis.json`, tolerantly.

What is read, first match wins (docs/sweeps.md lists the same):

1. ``layer_ranking``: layer indices from most to least general harm (the analyzer's contract);
   also accepted under ``ranking.layer_ranking`` / ``score.layer_ranking``.
2. Per-layer scores, higher = more harm: ``layer_scores`` / ``combined_score`` / ``scores`` as a
   list indexed by layer or a mapping {layer: score}, or ``layers`` as a list of records with a
   layer index (``layer`` / ``index``) and a score (``combined`` / ``combined_score`` / ``score``).
   The ranking is the scores sorted high to low (ties: the earlier layer first).

The ranking must name every layer 0..L−1 exactly once; anything else is a `UserError` that says
what was found. Scores, when present, are kept for the report.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from spear_mm.errors import UserError

_SCORE_LISTS = ("layer_scores", "combined_score", "scores")
_RECORD_SCORES = ("combined", "combined_score", "score")


@dataclass(frozen=True)
class LayerRanking:
    """Layers in restore order (most general harm first), their scores if known, and the key."""

    order: tuple[int, ...]
    scores: tuple[float, ...] | None
    source: str


def _from_scores(scores: list[float]) -> list[int]:
    return sorted(range(len(scores)), key=lambda i: (-scores[i], i))


def _score_list(value, where: str) -> list[float] | None:
    if isinstance(value, list) and value and all(isinstance(v, int | float) for v in value):
        return [float(v) for v in value]
    if isinstance(value, dict) and value:
        try:
            pairs = {int(k): float(v) for k, v in value.items()}
        except (TypeError, ValueError):
            return None
        return [pairs.get(i, math.nan) for i in range(max(pairs) + 1)]
    return None


def _records(value) -> list[float] | None:
    if not (isinstance(value, list) and value and all(isinstance(r, dict) for r in value)):
        return None
    found: dict[int, float] = {}
    for rec in value:
        layer = rec.get("layer", rec.get("index"))
        score = next((rec[k] for k in _RECORD_SCORES if isinstance(rec.get(k), int | float)), None)
        if not isinstance(layer, int) or score is None:
            return None
        found[layer] = float(score)
    return [found.get(i, math.nan) for i in range(max(found) + 1)]


def parse_ranking(data: dict, where: str = "analysis.json") -> LayerRanking:
    """The ranking in an analysis dict (see the module doc); UserError when there is none."""
    for holder, prefix in (
        (data, ""),
        (data.get("ranking"), "ranking."),
        (data.get("score"), "score."),
    ):
        if isinstance(holder, dict) and isinstance(holder.get("layer_ranking"), list):
            order = holder["layer_ranking"]
            if not all(isinstance(i, int) for i in order):
                raise UserError(f"{prefix}layer_ranking in {where} must list layer indices (ints)")
            scores = next(
                (_score_list(holder.get(k), where) for k in _SCORE_LISTS if k in holder), None
            )
            return LayerRanking(tuple(order), _tuple(scores), f"{prefix}layer_ranking")
    for key in _SCORE_LISTS:
        scores = _score_list(data.get(key), where)
        if scores is not None:
            return LayerRanking(tuple(_from_scores(scores)), tuple(scores), key)
    scores = _records(data.get("layers"))
    if scores is not None:
        return LayerRanking(tuple(_from_scores(scores)), tuple(scores), "layers[].score")
    raise UserError(
        f"{where} has no layer ranking: expected 'layer_ranking' (layer indices, most harm first) "
        f"or per-layer scores ({', '.join(_SCORE_LISTS)}); run `spear-mm analyze` to write one"
    )


def _tuple(values):
    return None if values is None else tuple(values)


def load_ranking(path: str | Path, num_layers: int) -> LayerRanking:
    """Read and check the ranking of `path` against a model with `num_layers` blocks."""
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise UserError(f"analysis {p}: cannot read ({exc.strerror}); pass analysis=PATH") from None
    except json.JSONDecodeError as exc:
        raise UserError(
            f"analysis {p}: not valid JSON (line {exc.lineno}); re-run analyze"
        ) from None
    if not isinstance(data, dict):
        raise UserError(f"analysis {p}: expected a JSON object at the top level")
    ranking = parse_ranking(data, str(p))
    if sorted(ranking.order) != list(range(num_layers)):
        raise UserError(
            f"{ranking.source} in {p} ranks {len(ranking.order)} layers "
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
