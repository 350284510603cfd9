"""The merge-method registry: one entry per method, used for dispatch, validation and docs.

Adding a method: write `methods/<name>.py` defining a `MergeMethod` (a kernel and its `Param`s;
task-vector methods use `task_vector.task_vector_method` with their sparsifier) and add it to
`_ALL` below. Recipes, the executor, the in-memory merger and `spear-mm merge` pick it up.
"""

from __future__ import annotations

from spear_mm.merge.methods.base import KernelCall, MergeMethod, Param
from spear_mm.merge.methods.breadcrumbs import BREADCRUMBS, BREADCRUMBS_TIES
from spear_mm.merge.methods.dare import DARE_LINEAR, DARE_TIES
from spear_mm.merge.methods.interpolate import LERP, SLERP, SLERP_ROWWISE
from spear_mm.merge.methods.linear import LINEAR
from spear_mm.merge.methods.lowrank import LOWRANK
from spear_mm.merge.methods.task_arithmetic import TASK_ARITHMETIC
from spear_mm.merge.methods.ties import TIES

_ALL = (
    LERP,
    SLERP,
    SLERP_ROWWISE,
    LINEAR,
    TASK_ARITHMETIC,
    TIES,
    DARE_TIES,
    DARE_LINEAR,
    BREADCRUMBS,
    BREADCRUMBS_TIES,
    LOWRANK,
)
REGISTRY: dict[str, MergeMethod] = {m.name: m for m in _ALL}
assert len(REGISTRY) == len(_ALL), "duplicate merge method name"


def get(name: str) -> MergeMethod:
    """The entry for `name` (KeyError names the known methods)."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown merge method {name!r}; known: {', '.join(REGISTRY)}") from None


def names(fmt: str) -> list[str]:
    """Methods a recipe format accepts: `native` (`method:`) or `mergekit` (`merge_method:`)."""
    return [m.name for m in REGISTRY.values() if (m.native if fmt == "native" else m.mergekit)]


__all__ = ["REGISTRY", "KernelCall", "MergeMethod", "Param", "get", "names"]
