"""InMemoryMerger gives the disk executor's tensors, in place, and resets to adapted."""

from __future__ import annotations

import pytest
import torch

from spear_mm.errors import UserError
from spear_mm.merge.executor import run_merge
from spear_mm.merge.inmemory import InMemoryMerger
from spear_mm.merge.recipe import load_recipe, recipe_from_dict


@pytest.fixture(scope="module")
def merger(pair):
    return InMemoryMerger.from_pretrained(str(pair[0]), str(pair[1]))


def _params(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


METHOD_PARAMS = {
    "ties": {"density": [0.2, 0.7]},
    "dare_linear": {"density": 0.5, "seed": 7},
    "breadcrumbs": {"density": 0.6, "gamma": 0.05},
    "lowrank": {"rank": 3},
}


@pytest.mark.parametrize(
    "method",
    ["slerp", "slerp_rowwise", "lerp", "task_arithmetic", "ties", "dare_linear", "breadcrumbs"]
    + ["lowrank"],
)
def test_apply_equals_disk_merge(tmp_path, mh, pair, merger, method):
    data = {
        "base": str(pair[0]),
        "adapted": str(pair[1]),
        "method": method,
        "default": [0.2, 0.9],
        "rules": [{"kinds": "embeddings", "t": 0.4}, {"layers": 2, "action": "freeze"}],
    }
    if method in METHOD_PARAMS:
        data["parameters"] = METHOD_PARAMS[method]
    recipe = load_recipe(mh.write_recipe(tmp_path / "r.yaml", data))
    disk_report = run_merge(recipe, tmp_path / "out", progress=False)
    report = merger.apply(recipe)
    disk = mh.load_weights(tmp_path / "out")
    live = _params(merger.model)
    assert set(live) == set(disk)  # tied: lm_head is the embedding, merged once
    for name, tensor in disk.items():
        assert torch.equal(live[name], tensor), name
        assert report["tensors"][name] == disk_report["tensors"][name]
    model = merger.model
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()


def test_mergekit_recipe_in_memory_equals_disk(tmp_path, mh, pair, merger):
    data = {
        "merge_method": "slerp",
        "base_model": str(pair[0]),
        "dtype": "bfloat16",
        "out_dtype": "float32",
        "models": [{"model": str(pair[1])}],
        "parameters": {"t": [{"filter": "mlp", "value": [0.1, 0.8]}, {"value": 0.5}]},
    }
    recipe = load_recipe(mh.write_recipe(tmp_path / "mk.yaml", data))
    run_merge(recipe, tmp_path / "out", progress=False)
    merger.apply(recipe)
    live = _params(merger.model)
    for name, tensor in mh.load_weights(tmp_path / "out").items():
        assert torch.equal(live[name], tensor), name


def test_apply_layer_t_equals_native_recipe(pair, merger):
    layer_t = [0.1, 0.5, 0.7, 1.0]
    fast = merger.apply_layer_t(layer_t, other_t=0.3)
    got = _params(merger.model)
    rules = [
        {"layers": i, "t": t, "action": "restore"} if t < 1 else {"layers": i, "action": "keep"}
        for i, t in enumerate(layer_t)
    ]
    recipe = recipe_from_dict(
        {"base": "b", "adapted": "a", "method": "lerp", "default": 0.3, "rules": rules}
    )
    merger.apply(recipe)
    want = _params(merger.model)
    for name in want:
        assert torch.equal(got[name], want[name]), name
    assert fast["summary"]["paths"]["copy"] == 9  # layer 3 (t = 1) is copied


def test_reset_restores_adapted(pair, mh, merger):
    merger.apply_layer_t([0.0] * 4, other_t=0.0)
    base = mh.load_weights(pair[0])
    assert torch.equal(merger.model.model.norm.weight, base["model.norm.weight"])
    merger.reset()
    adapted = mh.load_weights(pair[1])
    for name, param in merger.model.named_parameters():
        assert torch.equal(param, adapted[name]), name


def test_layer_t_length_is_checked(merger):
    with pytest.raises(UserError, match="layer_t has 3 values; the model has 4"):
        merger.apply_layer_t([0.5] * 3)


def test_missing_base_tensor_is_an_error(merger):
    base = dict(merger.base_state)
    del base["model.norm.weight"]
    with pytest.raises(UserError, match="model.norm.weight is not in the base"):
        InMemoryMerger(merger.model, base, merger.adapted_state)


def test_in_place_lerp_fast_path_is_bit_identical(merger):
    layer_t = [0.25, 0.5, 0.9, 0.0]
    merger.apply_layer_t(layer_t, other_t=0.6, stats=True)  # general path (kernels.lerp)
    want = _params(merger.model)
    merger.reset()
    report = merger.apply_layer_t(layer_t, other_t=0.6, stats=False)  # in place
    got = _params(merger.model)
    for name in want:
        assert torch.equal(got[name], want[name]), name
    assert report["summary"]["paths"]["copy"] == 9  # layer 3 (t = 0) is copied


def test_in_place_lerp_refuses_non_finite_inputs(merger):
    adapted = dict(merger.adapted_state)
    bad = adapted["model.norm.weight"].clone()
    bad[0] = float("nan")
    adapted["model.norm.weight"] = bad
    broken = InMemoryMerger(merger.model, merger.base_state, adapted)
    with pytest.raises(UserError, match="model.norm.weight: the adapted weights contain NaN"):
        broken.apply_layer_t([0.5] * 4, other_t=0.5)
    merger.reset()
