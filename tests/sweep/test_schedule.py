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
    s = make_schedule("depth", 0.25, 6, None, spread=3.0)
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
    s = make_schedule("topk", 0.4, 5, ORDER)  # round(2.0) = 2 layers: 2 and 0
    assert s.layer_restore == (1.0, 0.0, 1.0, 0.0, 0.0)
    assert s.nonlayer_restore == 0.0  # last layer (4) is not restored
    s = make_schedule("topk", 0.6, 5, ORDER)  # 3 layers: 2, 0, 4 → embeddings follow layer 4
    assert s.nonlayer_restore == 1.0


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
