"""Scores → Conservative / Balanced / Aggressive merge recipes and freeze plans (pure + writers).

A policy turns the combined score into a per-layer interpolation weight t (t = weight of the
ADAPTED model; t = 1 keeps the CPT layer, t = 0 restores the base). Pilots here found graded
per-layer t better than switching whole layers, so every policy is graded:

    h_i = rank01(score_i)                       1 for the most harmful layer, 0 for the least
    t_i = 1 − (uniform + graded · h_i)          then rounded to 3 decimals

A layer whose tensors are identical in both checkpoints (``unchanged``) is never restored: it gets
t = 1 (any t gives the same weights, so no restore budget goes to it), is left out of the ranks
h_i of the others and out of the freeze plan, and the recipe's header says so.

| policy       | uniform | graded | t range      | mean t | freeze plan (2nd CPT pass)  |
|--------------|---------|--------|--------------|--------|-----------------------------|
| conservative | 0.05    | 0.20   | 0.75 – 0.95  | 0.85   | top 10% of layers           |
| balanced     | 0.10    | 0.30   | 0.60 – 0.90  | 0.75   | top 20% of layers           |
| aggressive   | 0.20    | 0.40   | 0.40 – 0.80  | 0.60   | top 33% of layers           |

The tensors outside the blocks (embeddings, final norm, and a tied lm_head) moved together with
the last layer during CPT, so they take the last layer's t (restoring one without the others hurt
both general and domain text in the pilot); when the last layer did not change, they take the mean
t of the layers that did. The interpolation is LERP by default: whole-tensor
SLERP between a base and its own CPT checkpoint degenerates to LERP (cosine > 0.9995).
"""

from __future__ import annotations

import math
from collections.abc import Collection
from dataclasses import dataclass

from spear_mm.analyze.validate import rank01, ranking


@dataclass(frozen=True)
class Policy:
    name: str
    uniform: float  # restoration every layer gets
    graded: float  # extra restoration for the most harmful layer (scaled by h_i)
    freeze_fraction: float  # share of layers the freeze plan keeps at base in a 2nd CPT pass
    summary: str


POLICIES = (
    Policy(
        "conservative",
        0.05,
        0.20,
        0.10,
        "keeps most of the domain gain: mild restoration, strongest on the worst layers",
    ),
    Policy(
        "balanced",
        0.10,
        0.30,
        0.20,
        "about a quarter of the way back to base on average, graded by layer harm",
    ),
    Policy(
        "aggressive",
        0.20,
        0.40,
        0.33,
        "recovers the most general ability; gives up more of the domain gain",
    ),
)


def layer_t(score: list[float], policy: Policy, unchanged: Collection[int] = ()) -> list[float]:
    """Per-layer t (weight of the adapted model) for ``policy`` from the combined score.

    Unchanged layers get t = 1 and do not take part in the ranks of the others."""
    still = set(unchanged)
    live = [i for i in range(len(score)) if i not in still]
    t = [1.0] * len(score)
    for i, h in zip(live, rank01([score[i] for i in live])):
        t[i] = round(1.0 - (policy.uniform + policy.graded * h), 3)
    return t


def freeze_layers(score: list[float], policy: Policy, unchanged: Collection[int] = ()) -> list[int]:
    """The ceil(fraction · L') highest-scoring of the L' changed layers (at least 1 when any
    changed), in index order."""
    still = set(unchanged)
    live = [i for i in ranking(score) if i not in still]
    k = min(len(live), max(1, math.ceil(policy.freeze_fraction * len(live))))
    return sorted(live[:k])


def nonlayer_t(ts: list[float], unchanged: Collection[int] = ()) -> float:
    """t of the embeddings, final norm and lm_head: the last layer's, or, when the last layer did
    not change, the mean t of the layers that did (1 when none did)."""
    still = set(unchanged)
    if len(ts) - 1 not in still:
        return ts[-1]
    live = [t for i, t in enumerate(ts) if i not in still]
    return round(sum(live) / len(live), 3) if live else 1.0


def recipe_dict(
    score: list[float],
    policy: Policy,
    base: str,
    adapted: str,
    method: str = "lerp",
    unchanged: Collection[int] = (),
) -> dict:
    """A native merge recipe (spear_mm.merge.recipe): exact per-layer t for the blocks.

    The blocks get one rule whose t is a gradient with one anchor per layer — with L anchors over
    L layers the merge's gradient arithmetic lands exactly on ``t_i`` at layer i. Embeddings, the
    final norm and lm_head take the last layer's t (they move together under tied embeddings).
    """
    ts = layer_t(score, policy, unchanged)
    return {
        "base": base,
        "adapted": adapted,
        "method": method,
        "default": "keep",
        "rules": [
            {"layers": f"0-{len(ts) - 1}", "t": ts},
            {"kinds": ["embeddings", "lm_head", "norm_final"], "t": nonlayer_t(ts, unchanged)},
        ],
    }


def recipe_header(policy: Policy, unchanged: Collection[int] = ()) -> str:
    """Comment lines written above a recipe: what the policy does (and which t are moot)."""
    text = (
        f"# spear-mm analyze policy '{policy.name}': {policy.summary}.\n"
        f"# t = weight of the adapted model: t_i = 1 - ({policy.uniform} + {policy.graded}"
        " * h_i), h_i = rank of layer i's combined score in [0, 1].\n"
    )
    if unchanged:
        layers = ", ".join(str(i) for i in sorted(unchanged))
        text += (
            f"# layers {layers}: identical in base and adapted, so not restored (t = 1); their t"
            " is irrelevant (every t gives the same weights).\n"
        )
    return text


def freeze_plan_dict(
    score: list[float], policy: Policy, tied: bool, unchanged: Collection[int] = ()
) -> dict:
    """A freeze plan (train runner format version 1) for a second, selective CPT pass.

    Freezes the policy's most harmful layers; when the last layer is among them, also the final
    norm and embeddings (they move together; with tied embeddings lm_head is the same tensor).
    """
    layers = freeze_layers(score, policy, unchanged)
    freeze = []
    if len(score) - 1 in layers:
        freeze = [r"^model\.norm\.", r"^model\.embed_tokens\."]
        if not tied:
            freeze.append(r"^lm_head\.")
    return {
        "version": 1,
        "freeze": freeze,
        "layers": layers,
        "note": f"spear-mm analyze policy '{policy.name}': keep the "
        f"{len(layers)} most harmful layers at base",
    }
