"""Magnitude-aware ranking on tiny checkpoint pairs with planted far-out and unchanged layers.

The pair: 8 layers, every layer perturbed at relative size 0.02, except layer 5 (0.2: ten times
more — far out) and layers 1 and 2 (not at all: identical tensors). Depth alone would rank the
unchanged layers 1 and 2 near the top and the far-out layer 5 near the bottom.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from safetensors.torch import load_file

from spear_mm.analyze import aggregate, magnitude, policies, validate
from spear_mm.analyze.sanity import sanity_report
from spear_mm.analyze.stream import stream_signals
from spear_mm.io.checkpoint import CheckpointReader
from spear_mm.testing import make_tiny_llama, perturb_checkpoint

OUTLIER, STILL = 5, (1, 2)
SPECS = {
    "default": validate.ScoreSpec(dict(validate.DEFAULT_WEIGHTS)),
    "depth-only": validate.ScoreSpec({"depth": 1.0}),
    "out_drift+depth": validate.ScoreSpec({"depth": 1.0, "out_drift": 0.5}),
    "svdr": validate.ScoreSpec({"svdr": 1.0}),
}


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    root = tmp_path_factory.mktemp("planted")
    base = make_tiny_llama(root / "base", num_layers=8, seed=0)
    scales = {OUTLIER: 0.2, **{i: 0.0 for i in STILL}}
    adapted = perturb_checkpoint(base, root / "adapted", scale=0.02, seed=1, layer_scales=scales)
    with CheckpointReader(base) as b, CheckpointReader(adapted) as a:
        records, summary = stream_signals(b, a, device="cpu")
    aggregate.add_swci(records)
    return base, adapted, aggregate.layer_features(records, summary["num_layers"])


# ------------------------------------------------------------------ the scaling kernel
def test_without_far_out_or_unchanged_layers_the_score_is_the_rank_score():
    """The bulk is ranked (the combination the default was validated with), exactly."""
    rng = np.random.default_rng(0)
    feats = [
        {"depth": float(i), "rel_drift": v, "rel_drift:mlp_up": u, "norm_drift": 0.1}
        for i, (v, u) in enumerate(zip(rng.uniform(1, 2, 12), rng.lognormal(0, 0.5, 12)))
    ]
    assert magnitude.outlier_layers(feats) == []
    spec = validate.ScoreSpec({"depth": 1.0, "rel_drift:mlp_up": 0.5})
    ranks = [
        a + 0.5 * b
        for a, b in zip(
            validate.rank01([f["depth"] for f in feats]),
            validate.rank01([f["rel_drift:mlp_up"] for f in feats]),
        )
    ]
    assert validate.combined_score(feats, spec) == pytest.approx(ranks, abs=1e-15)


def test_lift_keeps_the_distance_when_most_values_are_equal():
    # IQR 0: the mean absolute deviation from the median is the scale (0.9 here)
    feats = [{"rel_drift": v, "norm_drift": 0.1} for v in [1.0] * 9 + [10.0]]
    fence = 1.0 + 3 * 0.9
    assert magnitude.far_out_fence(feats) == pytest.approx(fence)
    assert magnitude.outlier_lift(feats)[-1] == pytest.approx((10.0 - fence) / (2 * 0.9))


def test_far_out_fence_is_tukeys():
    x = [1.0, 1.1, 0.9, 1.05, 0.95, 1.2, 0.8, 10.0]
    feats = [{"rel_drift": v, "norm_drift": 0.1} for v in x]
    q1, q3 = np.percentile(x, [25, 75])
    assert magnitude.far_out_fence(feats) == pytest.approx(q3 + 3 * (q3 - q1))
    assert magnitude.outlier_layers(feats) == [7]
    lift = magnitude.outlier_lift(feats)
    assert lift[7] > 5 and all(v == 0.0 for v in lift[:7])


def test_a_layer_whose_only_change_is_a_bias_has_changed():
    still = {"rel_drift": 0.0, "norm_drift": 0.0, "rel_drift:attn_q.bias": 0.0}
    moved = {**still, "rel_drift:attn_q.bias": 0.3}
    assert magnitude.unchanged_layers([still, moved]) == [0]


# ------------------------------------------------------------------ the planted pair
def test_planted_pair_features(planted):
    _, _, feats = planted
    assert magnitude.unchanged_layers(feats) == list(STILL)
    assert magnitude.outlier_layers(feats) == [OUTLIER]


@pytest.mark.parametrize("name", sorted(SPECS))
def test_unchanged_last_and_far_out_near_top_for_every_spec(planted, name):
    _, _, feats = planted
    score = validate.combined_score(feats, SPECS[name])
    order = validate.ranking(score)
    assert sorted(order[-len(STILL) :]) == list(STILL), order  # (a) never ahead of a changed one
    assert order[0] == OUTLIER, order  # (b) a far-out layer ranks at the top
    report = sanity_report(feats, score)
    assert report["unchanged_layers"] == list(STILL) and report["warnings"] == []
    (entry,) = report["outlier_layers"]
    assert entry["layer"] == OUTLIER and entry["rank"] == 1 and entry["times_median"] > 5


def test_old_rank_score_put_unchanged_first_and_the_outlier_low(planted):
    """What the issue reported, on the same pair: rank01 scores (the previous combination)."""
    _, _, feats = planted
    old = [
        a + b
        for a, b in zip(
            validate.rank01([f["depth"] for f in feats]),
            validate.rank01([f["rel_drift:mlp_up"] for f in feats]),
        )
    ]
    order = validate.ranking([1.0 * v for v in old])
    assert order.index(OUTLIER) > 0 and order.index(STILL[0]) < len(order) - 2
    report = sanity_report(feats, old)
    assert any("unchanged layer" in w for w in report["warnings"])


def test_without_guard_the_report_warns_unless_the_ablation_agrees(planted):
    _, _, feats = planted
    spec = validate.ScoreSpec({"depth": 1.0}, outlier_guard=0.0)
    score = validate.combined_score(feats, spec)
    assert validate.ranking(score).index(OUTLIER) > 1
    warned = sanity_report(feats, score)
    assert any(
        "contradicts the magnitudes" in w and f"layer {OUTLIER}" in w for w in warned["warnings"]
    )
    harm = [0.0] * len(feats)  # an ablation that measures the far-out layer as harmless ...
    harm[0], harm[OUTLIER] = 1.0, -1.0
    agreed = sanity_report(feats, score, harm)
    assert agreed["warnings"] == [] and "ablation agrees" in agreed["notes"][0]


@pytest.mark.parametrize("policy", policies.POLICIES, ids=lambda p: p.name)
def test_every_policy_skips_unchanged_and_restores_the_outlier_most(planted, policy, tmp_path):
    from spear_mm.merge.recipe import load_recipe

    base, adapted, feats = planted
    score = validate.combined_score(feats, SPECS["default"])
    still = magnitude.unchanged_layers(feats)
    ts = policies.layer_t(score, policy, still)
    assert [ts[i] for i in STILL] == [1.0, 1.0]  # never restored
    live = [t for i, t in enumerate(ts) if i not in STILL]
    assert ts[OUTLIER] == min(live) == round(1 - policy.uniform - policy.graded, 3)
    assert max(live) == round(1 - policy.uniform, 3)  # the graded range spans the changed layers
    frozen = policies.freeze_layers(score, policy, still)
    assert OUTLIER in frozen and not set(STILL) & set(frozen)
    recipe = policies.recipe_dict(score, policy, str(base), str(adapted), unchanged=still)
    head = policies.recipe_header(policy, still)
    assert "layers 1, 2" in head and "irrelevant" in head
    path = tmp_path / "r.yaml"
    path.write_text(head + yaml.safe_dump(recipe, sort_keys=False))
    with CheckpointReader(base) as reader:
        plan = load_recipe(path).plan(reader.names, 8)
    for name, tp in plan.items():
        if ".layers.1." in name or ".layers.2." in name:
            assert tp.t == 1.0, name


def test_last_layer_unchanged_embeddings_follow_the_changed_layers():
    ts = policies.layer_t([3.0, 2.0, 1.0, 0.0], policies.POLICIES[1], unchanged=[3])
    assert ts[3] == 1.0
    assert policies.nonlayer_t(ts, [3]) == pytest.approx(sum(ts[:3]) / 3, abs=1e-3)


def test_all_unchanged_restores_nothing_and_says_so():
    feats = [{"depth": float(3 - i), "rel_drift": 0.0, "norm_drift": 0.0} for i in range(4)]
    score = validate.combined_score(feats, SPECS["depth-only"])
    assert policies.layer_t(score, policies.POLICIES[2], [0, 1, 2, 3]) == [1.0] * 4
    assert policies.freeze_layers(score, policies.POLICIES[2], [0, 1, 2, 3]) == []
    assert "no layer changed" in sanity_report(feats, score)["warnings"][-1]


# ------------------------------------------------------------------ the sweep's analyzer family
def test_sweep_analyzer_family_never_restores_unchanged_layers(planted):
    from spear_mm.sweep.ranking import LayerRanking, inert_last, unchanged_layers
    from spear_mm.sweep.schedule import make_schedule

    base, adapted, _ = planted
    inert = unchanged_layers(
        load_file(base / "model.safetensors"), load_file(adapted / "model.safetensors"), 8
    )
    assert inert == STILL
    notes: list[str] = []
    old = LayerRanking((1, 2, 0, OUTLIER, 3, 4, 6, 7), None, "layer_ranking")  # depth-like
    order = inert_last(old, inert, notes).order
    assert order[-2:] == (1, 2) and notes and "moved to the end" in notes[0]
    for knob in (0.1, 0.5, 0.9):
        s = make_schedule("analyzer", knob, 8, order, spread=3.0, inert=inert)
        assert [s.layer_restore[i] for i in STILL] == [0.0, 0.0]
        live = [r for i, r in enumerate(s.layer_restore) if i not in STILL]
        assert s.layer_restore[0] == max(live) == pytest.approx(knob ** (1 / 3))
        assert min(live) == pytest.approx(knob**3)  # γ spread over the 6 changed layers
    assert make_schedule("analyzer", 1.0, 8, order, inert=inert).layer_restore == (1.0,) * 8


def test_sweep_writes_the_moot_t_comment_and_merges_it(planted, tmp_path):
    from omegaconf import OmegaConf

    from spear_mm.cli.hydra_app import compose
    from spear_mm.sweep.config import SweepConfig
    from spear_mm.sweep.runner import evaluate_point, setup

    base, adapted, _ = planted
    analysis = tmp_path / "analysis.json"
    analysis.write_text(
        json.dumps({"schema_version": 1, "layer_ranking": [1, 2, 0, 5, 3, 4, 6, 7]})
    )
    cfg = compose(  # typed, as hydra_app hands it to the task
        "sweep",
        [f"base={base}", f"adapted={adapted}", f"analysis={analysis}", f"out={tmp_path / 'o'}",
         "probe.max_tokens=64", "probe.seq_len=32"],
        SweepConfig,
    )  # fmt: skip
    sw = setup(OmegaConf.to_object(cfg))
    assert sw.inert == STILL and sw.ranking.order[-2:] == STILL
    point = evaluate_point(sw, "analyzer", 0.5, "grid")
    text = (sw.out / point.recipe).read_text()
    assert "# layers 1, 2: identical in base and adapted, not restored" in text
    assert [point.layer_t[i] for i in STILL] == [1.0, 1.0]
    assert point.layer_t[0] == min(point.layer_t)


def test_study_report_repeats_the_sanity_warnings():
    from spear_mm.analyze.document import AnalysisDoc
    from spear_mm.pipeline.findings import analyzer_findings

    doc = AnalysisDoc(schema_version=1, layer_ranking=[0], sanity={"warnings": ["layer 3 odd"]})
    lines, _ = analyzer_findings(doc)
    assert "Analyzer warning: layer 3 odd." in lines
