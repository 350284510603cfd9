"""`dare_linear` / `dare_ties`: drop each entry of Δ with probability 1 − density, rescale the rest
(Yu et al. 2024). Seeded per tensor (`seed`, recorded in the report); mergekit's DARE draws from
torch's global generator, so the two agree in distribution, not bit for bit (docs/merge.md)."""

from spear_mm.merge.methods.task_vector import DENSITY, SEED, kept_fraction, rescale_param
from spear_mm.merge.methods.task_vector import task_vector_method as _method
from spear_mm.merge.taskvector import apply_mask, dare_mask, tensor_seed


def _drop(delta, values, call):
    seed = tensor_seed(int(values["seed"]), call.name)
    mask = dare_mask(delta, float(values["density"]), seed)
    extra = {**kept_fraction(mask), "seed": int(values["seed"])} if mask is not None else {}
    return apply_mask(delta, mask, values["rescale"]), extra


_PARAMS = (DENSITY, rescale_param(True), SEED)
_REF = "https://arxiv.org/abs/2311.03099"
DARE_LINEAR = _method(
    "dare_linear",
    "drop Δ entries at random (keep density), rescale, base + λ·Δ′",
    _drop,
    _PARAMS,
    consensus=False,
    normalize=False,
    reference=_REF,
)
DARE_TIES = _method(
    "dare_ties",
    "DARE drop and rescale, then TIES sign election",
    _drop,
    _PARAMS,
    consensus=True,
    normalize=False,
    reference=_REF,
)
