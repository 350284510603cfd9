"""`ties`: trim Δ to its `density` largest-magnitude entries, elect signs, merge (Yadav et al. 2023).

With one adapted model the sign election keeps every kept entry: `ties` is magnitude trimming.
"""

from spear_mm.merge.methods.task_vector import DENSITY, kept_fraction, rescale_param
from spear_mm.merge.methods.task_vector import task_vector_method as _method
from spear_mm.merge.taskvector import apply_mask, magnitude_mask


def _trim(delta, values, call):
    mask = magnitude_mask(delta, float(values["density"]), call.mergekit)
    return apply_mask(delta, mask, values["rescale"]), kept_fraction(mask)


TIES = _method(
    "ties",
    "keep the density largest |Δ|, sign election, base + λ·Δ′",
    _trim,
    (DENSITY, rescale_param(False)),
    consensus=True,
    normalize=True,
    reference="https://arxiv.org/abs/2306.01708",
)
