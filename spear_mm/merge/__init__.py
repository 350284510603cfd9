"""Merging base and adapted checkpoints: kernels, recipes, the streaming executor, in-memory merges.

- `kernels`, `taskvector`: LERP, whole-tensor SLERP (mergekit semantics), row-wise SLERP; task-vector
  trimming, DARE, low-rank truncation, sign election — pure functions.
- `methods`: the registry, one `MergeMethod` (kernel + parameters) per method name.
- `recipe` (`native`, `mergekit_compat`): native and mergekit YAML → per-tensor `TensorPlan`s.
- `executor.run_merge`: the disk merge behind `spear-mm merge`.
- `inmemory.InMemoryMerger`: the same merge into a live model, for sweeps.
"""

from spear_mm.merge.executor import run_merge
from spear_mm.merge.inmemory import InMemoryMerger
from spear_mm.merge.plan import TensorPlan
from spear_mm.merge.recipe import Recipe, load_recipe, recipe_from_dict

__all__ = ["InMemoryMerger", "Recipe", "TensorPlan", "load_recipe", "recipe_from_dict", "run_merge"]
