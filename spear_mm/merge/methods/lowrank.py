"""`lowrank`: base + t·Δ_r, Δ_r the best rank-r approximation of each matrix's Δ (native only).

`rank` fixes r for every matrix; otherwise r = round(rank_fraction · min(rows, cols)). Tensors
that are not matrices (norm weights, biases) keep their full Δ.
"""

from spear_mm.merge.methods.base import Param
from spear_mm.merge.methods.task_vector import task_vector_method
from spear_mm.merge.taskvector import lowrank

RANK = Param("rank", None, "rank r kept per matrix (overrides rank_fraction)", 0.0, kind="int")
RANK_FRACTION = Param("rank_fraction", 1.0, "share of each matrix's full rank kept", 0.0, 1.0)


def _truncate(delta, values, call):
    if delta.dim() != 2:
        return delta, {}
    full = min(delta.shape)
    r = values["rank"]
    r = int(r) if r is not None else round(float(values["rank_fraction"]) * full)
    return lowrank(delta, r), {"rank": min(r, full)}


LOWRANK = task_vector_method(
    "lowrank",
    "base + t·(rank-r truncation of Δ) per matrix",
    _truncate,
    (RANK, RANK_FRACTION),
    consensus=False,
    normalize=False,
    mergekit=False,
)
