"""Loading a merge recipe, native or mergekit, told apart by `merge_method`.

The front door: `load_recipe(path)` / `recipe_from_dict(data)` pick the format reader
(`merge.native` or `merge.mergekit_compat`; neither imports the other) and return a `Recipe`
whose `plan(names, num_layers)` gives each tensor its `TensorPlan`. Formats: docs/recipes.md.
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from spear_mm.errors import UserError
from spear_mm.merge.mergekit_compat import mergekit_recipe
from spear_mm.merge.native import NativeRecipe, NativeSpec, check_match_patterns, native_recipe
from spear_mm.merge.recipe_base import Recipe, validation_message


def recipe_from_dict(data: dict, source: Path | None = None) -> Recipe:
    """Build a Recipe from parsed YAML (native or mergekit, told apart by `merge_method`)."""
    where = f"recipe {source}" if source else "recipe"
    if not isinstance(data, dict):
        raise UserError(
            f"{where}: the top level must be a mapping with base/adapted "
            "(native) or merge_method (mergekit)"
        )
    if "merge_method" in data:
        return mergekit_recipe(data, source)
    return native_recipe(data, source)


def load_recipe(path: str | os.PathLike) -> Recipe:
    """Read a native or mergekit recipe file; every problem is a one-line UserError."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"recipe {path} does not exist or is not a file")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise UserError(f"recipe {path} is not valid YAML: {exc}") from None
    return recipe_from_dict(data, path)


__all__ = [
    "NativeRecipe",
    "NativeSpec",
    "Recipe",
    "check_match_patterns",
    "load_recipe",
    "recipe_from_dict",
    "validation_message",
]
