"""The trade-off knob: one number a ∈ [0, 1] → a per-layer restore schedule (pure).

`a = 0` is the adapted model and `a = 1` the base, exactly, in every family. A schedule gives each
decoder layer i a *restore* r_i ∈ [0, 1] (how far back towards the base it moves) and one restore
for the tensors outside the blocks (embeddings, final norm, tied or untied lm_head). The merge
weight of the adapted model is t_i = 1 − r_i (the recipe convention: t = weight of the ADAPTED).

Families (docs/sweeps.md has the reasoning and worked numbers):

- ``uniform``  r_i = a for every layer: WiSE-FT, the line every layer-aware family must beat.
- ``depth``    r_i = a^γ_i with γ_i from the layer's depth: earlier layers are restored more.
- ``analyzer`` r_i = a^γ_i with γ_i from the analyzer's ranking (most general harm first).
- ``topk``     whole layers: the round(a·L) top-ranked layers at r = 1, the rest at r = 0.
- ``kinds``    per kind: attention, MLP, norms and embeddings each r = a^g_kind (`kind_gamma`),
               optionally shaped in depth (`kind_depth_spread` κ_d > 1: r = a^(g_kind·κ_d^(2p_i − 1)),
               p_i = i/(L − 1), early layers first: LiNeS-like per kind).
- task-vector families (`TASK_VECTOR_FAMILIES`): the knob removes part of the task vector
  Δ = adapted − base. ``task_arithmetic``: λ = 1 − a (with one adapted model, LERP up to rounding);
  ``ties``, ``dare``, ``breadcrumbs``: density = 1 − a of Δ's entries kept (magnitude trim, random
  drop and L1 rescale, trim of both tails); ``lowrank``: rank_fraction = 1 − a of each matrix's
  rank kept. Every tensor, embeddings included, gets the same setting.
- ``learned``  per kind group and depth, fitted by gradient on calibration-role text under a
               general-NLL budget set by the knob (spear_mm/sweep/learned.py): not built here.

γ_i = κ^(2·p_i − 1), where p_i ∈ [0, 1] is the layer's position in the ranking (0 = restore
first) and κ ≥ 1 the spread (`gamma_spread`); κ = 1 is the uniform family. The exponents' geometric
mean is 1, so a graded schedule restores about as much in total as uniform at the same knob. Powers
keep both ends exact for any κ: 0^γ = 0 and 1^γ = 1.

Layers identical in base and adapted (``inert``, found by the sweep in the weights it merges) are
never restored by ``analyzer``: r = 0 strictly inside (0, 1) (their t is irrelevant — every t gives
the same weights — and the recipe's comment says so), and the γ positions are spread over the
layers that changed, so no part of the schedule goes to a no-op.

Non-layer tensors (`nonlayer`, for uniform / depth / analyzer / topk): ``mean`` (default) gives
embeddings, final norm and lm_head the mean of the layer restores, so a graded family restores them
about as much as uniform does at the same knob; ``knob`` gives them r = a; ``last`` the last layer's
restore (with tied embeddings the last block, final norm and embedding moved together during CPT —
but a graded family ranks the last layer last, so at a = 0.45 the embeddings get 0.45³ ≈ 0.09
where uniform gives 0.45: family comparisons then mix "which layers" with "how much of the
embeddings", issue 16). ``kinds`` and the task-vector families give them their own setting.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

# family → (merge method, the parameter the knob sets: value = 1 − knob; None: λ = t = 1 − knob)
TASK_VECTOR_FAMILIES = {
    "task_arithmetic": ("task_arithmetic", None),
    "ties": ("ties", "density"),
    "dare": ("dare_linear", "density"),
    "breadcrumbs": ("breadcrumbs", "density"),
    "lowrank": ("lowrank", "rank_fraction"),
}
FAMILIES = ("uniform", "depth", "analyzer", "topk", "kinds", *TASK_VECTOR_FAMILIES, "learned")
NONLAYER_POLICIES = ("mean", "knob", "last")
KIND_GROUPS = ("attention", "mlp", "norm", "embeddings")
# A starting hypothesis, not a finding (docs/sweeps.md): attention restored ahead of the MLP.
DEFAULT_KIND_GAMMA = {"attention": 0.5, "mlp": 2.0, "norm": 1.0, "embeddings": 1.0}


@dataclass(frozen=True)
class Schedule:
    """Per-layer restore of one sweep point; `t` values are the recipe's adapted weights."""

    family: str
    knob: float
    layer_restore: tuple[float, ...]
    nonlayer_restore: float
    inert: tuple[int, ...] = ()  # layers left at r = 0 because base and adapted are identical
    # Optional, for the method and per-kind families: the merge method of the point (None: the
    # sweep's `method`), its parameters, and per kind group its restore per layer (the final norm
    # takes the norm group's at the knob alone; embeddings / lm_head take `nonlayer_restore`).
    method: str | None = None
    params: tuple[tuple[str, float], ...] = ()
    kind_restore: tuple[tuple[str, tuple[float, ...]], ...] = ()
    final_norm_restore: float | None = None

    @property
    def layer_t(self) -> list[float]:
        return [1.0 - r for r in self.layer_restore]

    @property
    def nonlayer_t(self) -> float:
        return 1.0 - self.nonlayer_restore

    @property
    def mean_restore(self) -> float:
        return sum(self.layer_restore) / len(self.layer_restore)


def positions(order: Sequence[int], num_layers: int) -> list[float]:
    """p_i ∈ [0, 1] of every layer from a ranking (first = restore first; p = rank / (L − 1)).

    The ranking must be a permutation of 0..L−1 (checked by the caller's reader); with one layer
    the position is 0.
    """
    if sorted(order) != list(range(num_layers)):
        raise ValueError(f"ranking {list(order)} is not a permutation of 0..{num_layers - 1}")
    span = max(num_layers - 1, 1)
    pos = [0.0] * num_layers
    for rank, layer in enumerate(order):
        pos[layer] = rank / span
    return pos


def exponents(order: Sequence[int], num_layers: int, spread: float) -> list[float]:
    """γ_i = spread^(2·p_i − 1): 1/spread for the first-ranked layer, spread for the last."""
    if spread < 1.0:
        raise ValueError(f"gamma spread {spread} must be >= 1")
    return [spread ** (2.0 * p - 1.0) for p in positions(order, num_layers)]


def _check_knob(knob: float) -> float:
    knob = float(knob)
    if not 0.0 <= knob <= 1.0:
        raise ValueError(f"knob {knob} is outside [0, 1]")
    return knob


def _nonlayer(policy: str, knob: float, restore: list[float], inert=()) -> float:
    live = [r for i, r in enumerate(restore) if i not in inert] or restore  # inert: moot
    if policy == "last":
        if len(restore) - 1 not in inert:
            return restore[-1]
        policy = "mean"  # the last block did not change: its tie to the embeddings is moot
    if policy == "knob":
        return knob
    if policy == "mean":
        # Snap the ends so the mean of all-zeros / all-ones stays exactly 0 / 1.
        return 0.0 if knob == 0.0 else 1.0 if knob == 1.0 else sum(live) / len(live)
    raise ValueError(f"nonlayer policy '{policy}' is not one of {', '.join(NONLAYER_POLICIES)}")


def _graded_live(
    knob: float, num_layers: int, order: Sequence[int], spread: float, inert
) -> list[float]:
    """``analyzer`` with inert layers: γ spread over the changed layers only, r = 0 for the inert
    ones (r = 1 at knob 1, so the ends stay exact)."""
    live = [i for i in order if i not in inert]
    restore = [1.0 if knob == 1.0 else 0.0] * num_layers
    ranked = list(range(len(live)))
    for slot, g in zip(live, exponents(ranked, len(live), spread) if live else []):
        restore[slot] = knob**g
    return restore


def layer_restore(
    family: str,
    knob: float,
    num_layers: int,
    order: Sequence[int],
    spread: float,
    inert: Collection[int] = (),
) -> list[float]:
    """r_i for every layer (see the module doc); `order` is ignored by ``uniform``, ``inert``
    by every family but ``analyzer``."""
    knob = _check_knob(knob)
    if family == "uniform":
        return [knob] * num_layers
    if family == "analyzer" and inert:
        return _graded_live(knob, num_layers, order, spread, set(inert))
    if family in ("depth", "analyzer"):
        return [knob**g for g in exponents(order, num_layers, spread)]
    if family == "topk":
        k = round(knob * num_layers)
        chosen = set(order[:k])
        return [1.0 if i in chosen else 0.0 for i in range(num_layers)]
    raise ValueError(f"family '{family}' is not one of {', '.join(FAMILIES)}")


def task_vector_schedule(family: str, knob: float, num_layers: int) -> Schedule:
    """A task-vector family's point. The ends are copies: knob 0 is t = 1 with nothing trimmed
    (the adapted tensors), knob 1 is t = 0 (the base), so both are exact whatever the method."""
    knob = _check_knob(knob)
    method, param = TASK_VECTOR_FAMILIES[family]
    if param is None or knob in (0.0, 1.0):
        restore = knob
        params: tuple[tuple[str, float], ...] = ()
    else:  # λ = 1, the knob removes entries (or rank) of Δ
        restore, params = 0.0, ((param, float(round(1.0 - knob, 6))),)
    return Schedule(family, knob, (restore,) * num_layers, restore, method=method, params=params)


def kind_schedule(
    knob: float, num_layers: int, kind_gamma: Mapping[str, float], depth_spread: float = 1.0
) -> Schedule:
    """The ``kinds`` family: r = a^(g_kind·κ_d^(2p_i − 1)) per kind group and layer (module doc).

    `layer_restore` (for the report) is the mean of the three in-block groups per layer.
    """
    knob = _check_knob(knob)
    missing = [k for k in KIND_GROUPS if k not in kind_gamma]
    if missing or any(float(g) <= 0 for g in kind_gamma.values()):
        raise ValueError(f"kind_gamma needs a positive exponent for each of {KIND_GROUPS}")
    depth = exponents(list(range(num_layers)), num_layers, depth_spread)
    groups = tuple(
        (g, tuple(knob ** (float(kind_gamma[g]) * d) for d in depth)) for g in KIND_GROUPS[:3]
    )
    layer = tuple(sum(r[i] for _, r in groups) / 3 for i in range(num_layers))
    embed = knob ** float(kind_gamma["embeddings"])
    norm = knob ** float(kind_gamma["norm"])
    return Schedule("kinds", knob, layer, embed, kind_restore=groups, final_norm_restore=norm)


def make_schedule(
    family: str,
    knob: float,
    num_layers: int,
    order: Sequence[int] | None = None,
    *,
    spread: float = 3.0,
    nonlayer: str = "mean",
    inert: Collection[int] = (),
    kind_gamma: Mapping[str, float] | None = None,
    kind_depth_spread: float = 1.0,
) -> Schedule:
    """The schedule of `family` at `knob`; ``depth`` builds its own order (layer 0 first);
    ``inert`` (layers identical in both models) is used by ``analyzer`` only."""
    if family in TASK_VECTOR_FAMILIES:
        return task_vector_schedule(family, knob, num_layers)
    if family == "learned":
        if knob not in (0.0, 1.0):
            raise ValueError("the learned family is fitted (spear_mm.sweep.learned) inside (0, 1)")
        r = float(knob)  # the exact ends need no fit: the adapted model and the base
        groups = tuple((g, (r,) * num_layers) for g in KIND_GROUPS[:3])
        return Schedule(family, r, (r,) * num_layers, r, kind_restore=groups, final_norm_restore=r)
    if family == "kinds":
        gamma = DEFAULT_KIND_GAMMA if kind_gamma is None else kind_gamma
        return kind_schedule(knob, num_layers, gamma, kind_depth_spread)
    if family == "depth":
        order = list(range(num_layers))
    elif order is None:
        order = list(range(num_layers))
        if family != "uniform":
            raise ValueError(f"family '{family}' needs a layer ranking")
    inert = tuple(sorted(inert)) if family == "analyzer" else ()
    restore = layer_restore(family, knob, num_layers, order, spread, inert)
    other = _nonlayer(nonlayer, float(knob), restore, inert)
    return Schedule(family, float(knob), tuple(restore), other, inert)
