"""Knob → per-layer restore: exact ends, the uniform special case, graded and whole-layer shapes."""

from __future__ import annotations

import math

import pytest

from spear_mm.sweep.schedule import FAMILIES, NONLAYER_POLICIES, exponents, make_schedule

ORDER = [2, 0, 4, 1, 3]  # a ranking of 5 layers, most harm first


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("nonlayer", NONLAYER_POLICIES)
def test_knob_ends_are_exact(family, nonlayer):
    zero = make_schedule(family, 0.0, 5, ORDER, spread=4.0, nonlayer=nonlayer)
    one = make_schedule(family, 1.0, 5, ORDER, spread=4.0, nonlayer=nonlayer)
    assert zero.layer_t == [1.0] * 5 and zero.nonlayer_t == 1.0  # adapted everywhere
    assert one.layer_t == [0.0] * 5 and one.nonlayer_t == 0.0  # base everywhere


def test_uniform_is_the_knob_everywhere():
    s = make_schedule("uniform", 0.3, 5, None, nonlayer="knob")
    assert s.layer_restore == (0.3,) * 5 and s.nonlayer_restore == 0.3


def test_graded_family_with_spread_one_is_uniform():
    s = make_schedule("analyzer", 0.37, 5, ORDER, spread=1.0)
    assert s.layer_restore == pytest.approx([0.37] * 5, abs=0.0)


def test_depth_restores_earlier_layers_more():
    s = make_schedule("depth", 0.25, 6, None, spread=3.0, nonlayer="last")
    r = s.layer_restore
    assert all(a > b for a, b in zip(r, r[1:]))
    assert r[0] == pytest.approx(0.25 ** (1 / 3)) and r[-1] == pytest.approx(0.25**3)
    assert s.nonlayer_restore == r[-1]  # "last": embeddings move with the last block


def test_analyzer_follows_the_ranking():
    s = make_schedule("analyzer", 0.4, 5, ORDER, spread=2.0)
    by_rank = [s.layer_restore[i] for i in ORDER]
    assert all(a > b for a, b in zip(by_rank, by_rank[1:]))
    gammas = exponents(ORDER, 5, 2.0)
    assert math.prod(gammas) == pytest.approx(1.0)  # geometric mean 1: centred on uniform
    assert s.layer_restore[2] == pytest.approx(0.4**0.5) and s.layer_restore[3] == pytest.approx(
        0.4**2
    )


def test_topk_restores_whole_top_layers():
    s = make_schedule("topk", 0.4, 5, ORDER, nonlayer="last")  # round(2.0) = 2 layers: 2 and 0
    assert s.layer_restore == (1.0, 0.0, 1.0, 0.0, 0.0)
    assert s.nonlayer_restore == 0.0  # last layer (4) is not restored
    s = make_schedule("topk", 0.6, 5, ORDER, nonlayer="last")  # 3 layers: 2, 0, 4 → layer 4's
    assert s.nonlayer_restore == 1.0
    assert make_schedule("topk", 0.4, 5, ORDER).nonlayer_restore == pytest.approx(0.4)  # mean


def test_nonlayer_mean_policy():
    s = make_schedule("depth", 0.5, 4, None, spread=2.0, nonlayer="mean")
    assert s.nonlayer_restore == pytest.approx(sum(s.layer_restore) / 4)


def test_bad_inputs():
    with pytest.raises(ValueError, match="outside"):
        make_schedule("uniform", 1.2, 3)
    with pytest.raises(ValueError, match="permutation"):
        make_schedule("analyzer", 0.5, 3, [0, 0, 1])
    with pytest.raises(ValueError, match="needs a layer ranking"):
        make_schedule("topk", 0.5, 3, None)
    with pytest.raises(ValueError, match="family"):
        make_schedule("nope", 0.5, 3, [0, 1, 2])


@pytest.mark.parametrize("family", ["uniform", "depth", "analyzer", "topk"])
def test_nonlayer_default_is_the_mean_never_layer_l_minus_1(family):
    """Issue 16: non-layer tensors follow the family's mean restore by default."""
    s = make_schedule(family, 0.45, 5, ORDER, spread=3.0)
    assert s.nonlayer_restore == pytest.approx(s.mean_restore)
    if family in ("depth", "analyzer"):
        assert s.nonlayer_restore > 0.2 > s.layer_restore[-1 if family == "depth" else 3]


def test_kinds_family_per_group_and_depth():
    gamma = {"attention": 0.5, "mlp": 2.0, "norm": 1.0, "embeddings": 3.0}
    s = make_schedule("kinds", 0.25, 4, None, kind_gamma=gamma)
    groups = dict(s.kind_restore)
    assert groups["attention"] == pytest.approx((0.25**0.5,) * 4)
    assert groups["mlp"] == pytest.approx((0.25**2,) * 4)
    assert groups["norm"] == pytest.approx((0.25,) * 4)
    assert s.nonlayer_restore == pytest.approx(0.25**3) and s.final_norm_restore == 0.25
    shaped = make_schedule("kinds", 0.25, 4, None, kind_gamma=gamma, kind_depth_spread=2.0)
    att = dict(shaped.kind_restore)["attention"]
    assert att[0] == pytest.approx(0.25 ** (0.5 / 2)) and att[-1] == pytest.approx(
        0.25 ** (0.5 * 2)
    )
    assert all(x > y for x, y in zip(att, att[1:]))  # earlier layers restored more
    with pytest.raises(ValueError, match="kind_gamma"):
        make_schedule("kinds", 0.5, 4, None, kind_gamma={"attention": 1.0})


@pytest.mark.parametrize(
    "family, method, param",
    [
        ("ties", "ties", "density"),
        ("dare", "dare_linear", "density"),
        ("breadcrumbs", "breadcrumbs", "density"),
        ("lowrank", "lowrank", "rank_fraction"),
    ],
)
def test_task_vector_families_set_their_parameter_from_the_knob(family, method, param):
    s = make_schedule(family, 0.3, 4, None)
    assert s.method == method and s.params == ((param, 0.7),) and s.layer_t == [1.0] * 4
    ta = make_schedule("task_arithmetic", 0.3, 4, None)
    assert ta.method == "task_arithmetic" and ta.layer_t == pytest.approx([0.7] * 4)
    assert not ta.params


def test_kinds_recipe_maps_each_kind_to_its_tensors():
    from spear_mm.merge.recipe import recipe_from_dict
    from spear_mm.sweep.recipes import recipe_dict

    gamma = {"attention": 0.5, "mlp": 2.0, "norm": 1.0, "embeddings": 3.0}
    s = make_schedule("kinds", 0.4, 2, None, kind_gamma=gamma, kind_depth_spread=2.0)
    suffixes = {
        "self_attn.k_proj.weight": "attention",
        "mlp.down_proj.weight": "mlp",
        "post_attention_layernorm.weight": "norm",
    }
    names = [f"model.layers.{i}.{x}" for i in range(2) for x in suffixes]
    names += ["model.embed_tokens.weight", "model.norm.weight", "lm_head.weight"]
    plan = recipe_from_dict(recipe_dict(s, "b", "a")).plan(names, 2)
    groups = dict(s.kind_restore)
    for i in range(2):
        for suffix, group in suffixes.items():
            want = round(1 - groups[group][i], 6)
            assert plan[f"model.layers.{i}.{suffix}"].t == want, (i, suffix)
    assert plan["model.embed_tokens.weight"].t == round(1 - 0.4**3, 6)
    assert plan["lm_head.weight"].t == round(1 - 0.4**3, 6)
    assert plan["model.norm.weight"].t == round(1 - 0.4, 6)
