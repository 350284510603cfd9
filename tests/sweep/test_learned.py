"""The learned family: its parameterisation, a planted optimum it must recover, determinism, and
that it fits on calibration-role text only."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest
import torch

from spear_mm.errors import UserError
from spear_mm.io.checkpoint import CheckpointReader
from spear_mm.sweep.config import LearnSettings
from spear_mm.sweep.learned import (
    depth_weights,
    fit,
    initial_theta,
    n_params,
    restores,
    tensor_slot,
    to_schedule,
)


def run_cli(*args):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "spear_mm.cli.main", "sweep", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)


def test_parameters_stay_few_and_start_at_the_uniform_point():
    assert n_params(4) == 14 and n_params(20) == 62  # "at most ~64"
    with pytest.raises(UserError, match="learn.knots=21"):
        LearnSettings(knots=21)
    curves = restores(initial_theta(0.3, 4), num_layers=30, knots=4)
    for r in curves.values():
        assert torch.allclose(r, torch.full_like(r, 0.3), atol=1e-12)
    w = depth_weights(7, 3)  # knots at layers 0, 3, 6: layer 3 is the middle knot exactly
    assert torch.allclose(w.sum(dim=1), torch.ones(7, dtype=w.dtype))
    assert w[0].tolist() == [1, 0, 0] and w[3].tolist() == [0, 1, 0] and w[6].tolist() == [0, 0, 1]
    assert w[1].tolist() == pytest.approx([2 / 3, 1 / 3, 0])


def test_tensors_map_to_the_recipes_kind_rules():
    assert tensor_slot("model.layers.3.self_attn.q_proj.weight") == ("attention", 3)
    assert tensor_slot("model.layers.0.mlp.down_proj.weight") == ("mlp", 0)
    assert tensor_slot("model.layers.2.input_layernorm.weight") == ("norm", 2)
    assert tensor_slot("model.norm.weight") == ("norm_final", None)
    assert tensor_slot("model.embed_tokens.weight") == ("embeddings", None)
    assert tensor_slot("lm_head.weight") == ("embeddings", None)


def _planted(tiny_pair):
    """Base = the tiny model; adapted = base + Δ on every weight. Domain loss: distance from the
    adapted weights over attention and MLP (the domain wants all of Δ). General loss: distance of
    the MLP from the base only (only the MLP's change hurts). Budget 0.25 of that forgetting."""
    base_dir, _ = tiny_pair
    with CheckpointReader(base_dir) as reader:
        base = {k: v.float() for k, v in reader.state_dict().items()}
    gen = torch.Generator().manual_seed(3)
    adapted = {k: v + 0.1 * torch.randn(v.shape, generator=gen) for k, v in base.items()}
    attn = [n for n in base if tensor_slot(n)[0] == "attention"]
    mlp = [n for n in base if tensor_slot(n)[0] == "mlp"]

    def rel(params, names, ref):
        return sum(((params[n] - ref[n]) ** 2).sum() / ((adapted[n] - base[n]) ** 2).sum()
                   for n in names) / len(names)  # fmt: skip

    def objective(step, params):
        domain = rel(params, attn + mlp, adapted)
        return domain, rel(params, mlp, base) - 0.25  # G_base = 0, G_adapted = 1, β = 0.25

    return base, adapted, objective


def test_fit_recovers_a_planted_optimum_and_is_deterministic(tiny_pair):
    base, adapted, objective = _planted(tiny_pair)
    settings = LearnSettings(knots=2, steps=120, lr=0.1, penalty=10.0)
    first = fit(objective, base, adapted, num_layers=4, knob=0.75, settings=settings)
    curves = restores(first.theta, 4, 2)
    # (1 − r_mlp)² ≤ 0.25 → r_mlp ≥ 0.5 binds; attention is free to keep all of its change
    assert torch.all(curves["mlp"] > 0.45) and torch.all(curves["mlp"] < 0.6), curves["mlp"]
    assert torch.all(curves["attention"] < 0.1), curves["attention"]
    assert abs(first.trace[-1]["excess"]) < 0.03
    assert first.trace[-1]["objective"] < first.trace[0]["objective"]
    again = fit(objective, base, adapted, num_layers=4, knob=0.75, settings=settings)
    assert torch.equal(first.theta, again.theta)
    sched = to_schedule(first.theta, 0.75, 4, 2)
    kinds = dict(sched.kind_restore)
    assert set(kinds) == {"attention", "mlp", "norm"} and len(kinds["mlp"]) == 4
    assert math.isclose(kinds["mlp"][0], float(curves["mlp"][0]), rel_tol=1e-12)


def test_learned_points_fit_on_calibration_text_only(tiny_pair):
    from transformers import AutoTokenizer

    from spear_mm.eval.probe import Probe
    from spear_mm.merge.inmemory import InMemoryMerger
    from spear_mm.sweep.learned import learned_schedule

    base_dir, adapted_dir = tiny_pair
    merger = InMemoryMerger.from_pretrained(base_dir, adapted_dir)
    tok = AutoTokenizer.from_pretrained(adapted_dir)
    settings = {"max_tokens": 128, "seq_len": 32}
    selection = {n: Probe.named(n, role="selection", **settings) for n in ("general", "finance")}
    with pytest.raises(UserError, match="reads selection text"):
        learned_schedule(merger, selection, tok, 0.5, LearnSettings(steps=1))
    calib = {n: Probe.named(n, role="calibration", **settings) for n in ("general", "finance")}
    before = {n: p.detach().clone() for n, p in merger.model.named_parameters()}
    sched, record = learned_schedule(merger, calib, tok, 0.5, LearnSettings(steps=3))
    for name, p in merger.model.named_parameters():  # the live model is the adapted one again
        assert torch.equal(p, before[name]), name
    from spear_mm.io.roles import bundled_split

    for probe in ("general", "finance"):
        ids = set(record["calibration_ids"][probe])
        assert ids and ids <= set(bundled_split(probe).ids("calibration"))
    assert len(record["trace"]) == 3 and record["n_parameters"] == n_params(4)
    assert sched.family == "learned" and 0 < sched.mean_restore < 1
    ends = [learned_schedule(merger, calib, tok, k, LearnSettings())[0] for k in (0.0, 1.0)]
    assert ends[0].layer_restore == (0.0,) * 4 and ends[1].nonlayer_restore == 1.0


def test_sweep_learned_family_writes_native_recipes(tiny_pair, analysis, tmp_path):
    base, adapted = tiny_pair
    outs = []
    for k in range(2):
        out = tmp_path / f"out{k}"
        res = run_cli(
            f"base={base}", f"adapted={adapted}", f"analysis={analysis}", f"out={out}",
            "probe.max_tokens=128", "probe.seq_len=32", "families=[learned]",
            "learn.steps=2", "refine_steps=0",
        )  # fmt: skip
        assert res.returncode == 0, res.stderr[-2000:]
        outs.append(out)
    recipes = sorted((outs[0] / "recipes").glob("learned_*.yaml"))
    assert len(recipes) >= 5
    text = recipes[1].read_text()
    assert "kinds: attention" in text and "kinds: norm_final" in text and "family=learned" in text
    for r in recipes:  # deterministic: the same recipes bit for bit
        assert r.read_text() == (outs[1] / "recipes" / r.name).read_text()
    fits = sorted((outs[0] / "learned").glob("*.json"))
    assert fits and all(len(json.loads(f.read_text())["trace"]) == 2 for f in fits)
    doc = json.loads((outs[0] / "sweep.json").read_text())
    assert {p["family"] for p in doc["points"]} >= {"learned", "uniform"}
