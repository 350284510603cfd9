"""Sweep points on the tiny pair: exact ends, and recipes on disk = weights scored in memory."""

from __future__ import annotations

import pytest
import torch

from spear_mm.io.checkpoint import CheckpointReader
from spear_mm.merge.executor import run_merge
from spear_mm.merge.recipe import load_recipe
from spear_mm.sweep.runner import evaluate_point, setup
from spear_mm.sweep.schedule import FAMILIES


@pytest.fixture()
def sweep(sweep_cfg):
    return setup(sweep_cfg())


def _assert_model_equals(model, folder):
    with CheckpointReader(folder) as reader:
        for name, param in model.named_parameters():
            assert torch.equal(param.detach(), reader.get(name)), name


@pytest.mark.parametrize("family", FAMILIES)
def test_knob_zero_is_adapted_and_one_is_base_bit_exact(sweep, tiny_pair, family):
    base, adapted = tiny_pair
    evaluate_point(sweep, family, 0.0, "grid")
    _assert_model_equals(sweep.session.model, adapted)
    evaluate_point(sweep, family, 1.0, "grid")
    _assert_model_equals(sweep.session.model, base)


def test_baseline_scores_are_those_of_the_loaded_checkpoints(sweep, tiny_pair):
    from spear_mm.io.sources import load_model

    point = evaluate_point(sweep, "adapted", 0.0, "baseline")
    model, tok = load_model(tiny_pair[1])
    fresh = sweep.session.scorer(model, tok)
    assert point.raw == fresh


@pytest.mark.parametrize(
    ("family", "knob"),
    [("analyzer", 0.3), ("depth", 0.55), ("topk", 0.5), ("kinds", 0.4), ("ties", 0.6)]
    + [("dare", 0.5), ("lowrank", 0.5)],
)
def test_recipe_materialized_by_the_executor_equals_in_memory(sweep, tmp_path, family, knob):
    point = evaluate_point(sweep, family, knob, "grid")
    recipe = load_recipe(sweep.out / point.recipe)
    run_merge(recipe, tmp_path / "merged", progress=False)
    _assert_model_equals(sweep.session.model, tmp_path / "merged")
    # The scores belong to these weights: re-scoring the live model gives the same numbers.
    assert sweep.session.scorer(sweep.session.model, sweep.session.tokenizer) == point.raw


def test_graded_point_really_is_graded(sweep):
    point = evaluate_point(sweep, "analyzer", 0.3, "grid")
    # ranking [2, 0, 3, 1]: layer 2 restored most (smallest t), layer 1 least.
    t = point.layer_t
    assert t[2] < t[0] < t[3] < t[1]
    # non-layer tensors follow the mean restore (the default nonlayer=mean), not layer L-1's
    assert point.nonlayer_t == pytest.approx(sum(t) / len(t), abs=1e-6)


def test_layer_form_only_for_per_layer_recipes(tiny_pair):
    from spear_mm.merge.recipe import recipe_from_dict
    from spear_mm.sweep.evaluate import layer_form

    base, adapted = map(str, tiny_pair)
    names = [
        "model.layers.0.mlp.up_proj.weight",
        "model.layers.1.mlp.up_proj.weight",
        "model.layers.1.self_attn.q_proj.weight",
        "model.embed_tokens.weight",
    ]
    per_layer = recipe_from_dict(
        {
            "base": base,
            "adapted": adapted,
            "method": "lerp",
            "default": 0.9,
            "rules": [{"layers": 1, "t": 0.25}],
        }
    )
    assert layer_form(per_layer, names, 2) == ([0.9, 0.25], 0.9, "lerp")
    by_kind = recipe_from_dict(
        {
            "base": base,
            "adapted": adapted,
            "method": "lerp",
            "rules": [{"layers": 1, "kinds": "mlp", "t": 0.25}],
        }
    )
    assert layer_form(by_kind, names, 2) is None  # layer 1 mixes t = 0.25 and t = 1
    typed = recipe_from_dict({"base": base, "adapted": adapted, "dtype": "bfloat16"})
    assert layer_form(typed, names, 2) is None
