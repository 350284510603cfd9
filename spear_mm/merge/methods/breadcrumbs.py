"""`breadcrumbs` / `breadcrumbs_ties`: drop the `gamma` largest and the smallest |Δ|, keeping
`density` of the entries (Davari & Belilovsky 2023): large outliers and noise both go."""

from spear_mm.merge.methods.task_vector import DENSITY, GAMMA, kept_fraction, rescale_param
from spear_mm.merge.methods.task_vector import task_vector_method as _method
from spear_mm.merge.taskvector import apply_mask, breadcrumbs_mask


def _crumbs(delta, values, call):
    mask = breadcrumbs_mask(delta, float(values["density"]), float(values["gamma"]), call.mergekit)
    return apply_mask(delta, mask, values["rescale"]), kept_fraction(mask)


_PARAMS = (DENSITY, GAMMA, rescale_param(False))
_REF = "https://arxiv.org/abs/2312.06795"
BREADCRUMBS = _method(
    "breadcrumbs",
    "drop the gamma largest and the smallest |Δ| (keep density), base + λ·Δ′",
    _crumbs,
    _PARAMS,
    consensus=False,
    normalize=False,
    reference=_REF,
)
BREADCRUMBS_TIES = _method(
    "breadcrumbs_ties",
    "breadcrumbs trimming, then TIES sign election",
    _crumbs,
    _PARAMS,
    consensus=True,
    normalize=False,
    reference=_REF,
)
