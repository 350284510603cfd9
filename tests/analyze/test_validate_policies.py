"""Rank statistics, score specs, policies → recipes the merge loader reads, freeze plans."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from spear_mm.analyze import policies, validate
from spear_mm.errors import UserError


def _np_spearman(x, y):
    rx = np.argsort(np.argsort(x)).astype(float)
    ry = np.argsort(np.argsort(y)).astype(float)
    return float(np.corrcoef(rx, ry)[0, 1])


def test_spearman_matches_numpy_without_ties():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=20).tolist(), rng.normal(size=20).tolist()
    assert validate.spearman(x, y) == pytest.approx(_np_spearman(x, y))
    assert validate.spearman(x, x) == pytest.approx(1.0)
    assert validate.spearman(x, [-v for v in x]) == pytest.approx(-1.0)


def test_ranks_ties_and_constant():
    assert validate.ranks([3.0, 1.0, 3.0, 2.0]) == [3.5, 1.0, 3.5, 2.0]
    assert validate.spearman([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]) == 0.0  # no division error
    assert validate.rank01([5.0, 5.0]) == [0.5, 0.5]


def test_fit_recovers_planted_feature_and_spec_roundtrip(tmp_path):
    rng = np.random.default_rng(1)
    harm = rng.normal(size=12).tolist()
    feats = [
        {"good": h + 0.01 * i, "noise": float(rng.normal()), "depth": 11.0 - i}
        for i, h in enumerate(harm)
    ]
    spec = validate.fit_spec(feats, harm, label="study-A")
    assert "good" in spec.weights and spec.fit_rho == pytest.approx(
        validate.spearman(validate.combined_score(feats, spec), harm)
    )
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(spec.to_json()))  # a score_spec.json
    assert validate.ScoreSpec.load(path).weights == spec.weights
    analysis = {"schema_version": 1, "layer_ranking": [0], "score_spec": spec.to_json()}
    path.write_text(json.dumps(analysis))  # an analysis.json: its spec, through its reader
    assert validate.ScoreSpec.load(path).weights == spec.weights
    path.write_text(json.dumps({**analysis, "schema_version": 7}))
    with pytest.raises(UserError, match="schema_version 7, expected schema_version 1"):
        validate.ScoreSpec.load(path)
    with pytest.raises(UserError, match="not computed"):
        validate.combined_score([{"depth": 1.0}], validate.ScoreSpec({"missing": 1.0}))


def test_ranking_breaks_ties_by_depth():
    assert validate.ranking([1.0, 3.0, 1.0, 3.0]) == [1, 3, 0, 2]


def test_recipes_load_with_exact_layer_t(tmp_path, tiny_pair):
    from spear_mm.merge.recipe import load_recipe

    base, adapted = tiny_pair
    score = [0.2, 0.9, 0.5, 0.1]
    for p in policies.POLICIES:
        recipe = policies.recipe_dict(score, p, str(base), str(adapted))
        path = tmp_path / f"{p.name}.yaml"
        path.write_text(policies.recipe_header(p) + yaml.safe_dump(recipe, sort_keys=False))
        names = [f"model.layers.{i}.mlp.up_proj.weight" for i in range(4)]
        names += ["model.embed_tokens.weight", "model.norm.weight"]
        plan = load_recipe(path).plan(names, 4)
        h = validate.rank01(score)
        for i in range(4):
            expect = 1 - (p.uniform + p.graded * h[i])
            assert plan[names[i]].t == pytest.approx(expect, abs=1e-3)
        assert plan["model.embed_tokens.weight"].t == pytest.approx(plan[names[3]].t)
        assert plan["model.norm.weight"].t == pytest.approx(plan[names[3]].t)
    ts = {p.name: sum(policies.layer_t(score, p)) for p in policies.POLICIES}
    assert ts["conservative"] > ts["balanced"] > ts["aggressive"]  # more restoration each step


def test_freeze_plan_read_by_train_runner(tmp_path):
    from spear_mm.train.freeze import load_freeze_plan

    score = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]  # last layer most harmful
    plan = policies.freeze_plan_dict(score, policies.POLICIES[2], tied=True)
    path = tmp_path / "freeze.yaml"
    path.write_text(yaml.safe_dump(plan))
    loaded = load_freeze_plan(path)
    assert loaded.layers == [6, 7, 8, 9]  # ceil(0.33 * 10) = 4 highest
    assert any("embed_tokens" in p for p in loaded.patterns)  # moves with the last layer


def test_partial_spearman_removes_depth():
    depth = [9.0 - i for i in range(10)]
    harm = [d + 0.3 * ((-1) ** i) for i, d in enumerate(depth)]
    only_depth = [2 * d for d in depth]  # carries nothing beyond depth
    assert validate.spearman(only_depth, harm) > 0.9
    assert validate.partial_spearman(only_depth, harm, depth) == 0.0
    x, y = [1.0, 3.0, 2.0, 5.0, 4.0], [2.0, 1.0, 4.0, 3.0, 5.0]
    z = [1.0, 2.0, 3.0, 4.0, 5.0]
    rxy, rxz, ryz = (validate.spearman(*p) for p in ((x, y), (x, z), (y, z)))
    expect = (rxy - rxz * ryz) / ((1 - rxz**2) * (1 - ryz**2)) ** 0.5
    assert validate.partial_spearman(x, y, z) == pytest.approx(expect)


def test_default_spec_uses_the_mlp_up_drift_and_falls_back_to_depth():
    from spear_mm.analyze.validate import DEFAULT_WEIGHTS, FALLBACK_WEIGHTS, default_spec

    full = [{"depth": 3 - i, "rel_drift:mlp_up": v} for i, v in enumerate([0.1, 0.4, 0.2, 0.3])]
    spec = default_spec(full)
    assert spec.weights == DEFAULT_WEIGHTS and not spec.notes
    # depth rank01 [1, 2/3, 1/3, 0] + drift rank01 [0, 1, 1/3, 2/3]
    assert validate.ranking(validate.combined_score(full, spec)) == [1, 0, 2, 3]
    no_mlp = [{"depth": 1.0, "rel_drift": 0.2}, {"depth": 0.0, "rel_drift": 0.1}]
    spec = default_spec(no_mlp)
    assert spec.weights == FALLBACK_WEIGHTS and "rel_drift:mlp_up" in spec.notes[0]
    assert validate.ranking(validate.combined_score(no_mlp, spec)) == [0, 1]
