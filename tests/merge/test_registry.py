"""The merge-method registry: one entry per method drives dispatch, validation and docs."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch

import spear_mm.merge as merge_pkg
from spear_mm.errors import UserError
from spear_mm.merge import methods
from spear_mm.merge.apply import DtypePolicy, merge_tensor
from spear_mm.merge.kernels import KernelStats
from spear_mm.merge.methods.base import MergeMethod, Param
from spear_mm.merge.recipe import recipe_from_dict

MERGE_DIR = Path(merge_pkg.__file__).parent


def test_formats_list_the_expected_methods():
    assert methods.names("native")[:3] == ["lerp", "slerp", "slerp_rowwise"]
    assert "linear" not in methods.names("native") and "lowrank" in methods.names("native")
    mk = set(methods.names("mergekit"))
    assert mk == {
        "slerp",
        "linear",
        "task_arithmetic",
        "ties",
        "dare_ties",
        "dare_linear",
        "breadcrumbs",
        "breadcrumbs_ties",
    }


def test_every_default_is_inside_its_own_range():
    for method in methods.REGISTRY.values():
        for p in method.params:
            if p.default is not None:
                assert p.check(p.default) is None, (method.name, p.name)


def test_unknown_method_is_a_key_error_naming_the_known_ones():
    with pytest.raises(KeyError, match="known: lerp, slerp"):
        methods.get("nlerp")


def test_recipe_formats_do_not_import_each_other():
    def imported(path: Path) -> set[str]:
        tree = ast.parse(path.read_text())
        return {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}

    assert "spear_mm.merge.mergekit_compat" not in imported(MERGE_DIR / "native.py")
    assert "spear_mm.merge.native" not in imported(MERGE_DIR / "mergekit_compat.py")
    assert "spear_mm.merge.recipe" not in imported(MERGE_DIR / "mergekit_compat.py")
    for path in (MERGE_DIR / "methods").glob("*.py"):  # methods sit below the recipe readers
        assert not {m for m in imported(path) if "recipe" in m or "compat" in m}, path


def test_a_new_method_is_one_entry(monkeypatch):
    """Register a method and it is accepted by native recipes, validated and dispatched."""

    def kernel(a, b, plan, call):
        scale = plan.param("scale", 2.0)
        return (a + scale * plan.t * (b - a)).to(call.out_dtype or a.dtype), KernelStats("x2")

    toy = MergeMethod("double", "test", kernel, params=(Param("scale", 2.0, "k", 0.0, 4.0),))
    monkeypatch.setitem(methods.REGISTRY, "double", toy)
    recipe = recipe_from_dict(
        {
            "base": "b",
            "adapted": "a",
            "method": "double",
            "default": 0.25,
            "parameters": {"scale": 3},
        }
    )
    plan = recipe.plan(["model.norm.weight"], 1)["model.norm.weight"]
    a, b = torch.zeros(4), torch.ones(4)
    out, entry = merge_tensor("model.norm.weight", "norm_final", a, b, plan, DtypePolicy())
    assert torch.equal(out, torch.full((4,), 0.75)) and entry["path"] == "x2"
    with pytest.raises(UserError, match="parameters.scale"):
        recipe_from_dict(
            {"base": "b", "adapted": "a", "method": "double", "parameters": {"scale": 5}}
        )
