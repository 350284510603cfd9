"""Per-layer ablation: restorer round trip, activation cache gives identical numbers."""

from __future__ import annotations

import pytest
import torch

from spear_mm.analyze.ablation import Ablation, LayerRestorer, selection_quality
from spear_mm.eval.probe import Probe
from spear_mm.io.checkpoint import CheckpointReader
from spear_mm.io.sources import load_model

TEXTS = {
    "general": (
        "The quick brown fox jumps over the lazy dog. " * 12,
        "A dictionary gloss: a small domesticated carnivorous mammal. " * 6,
    ),
    "finance": ("Net income rose 12 pct to 4.5 mln dlrs on revenues of 80 mln. " * 10,),
}


def _measure(tok):
    probes = [
        Probe(name, texts=t, max_tokens=300, seq_len=64, batch_size=3) for name, t in TEXTS.items()
    ]
    return lambda m: {p.name: p.score(m, tok).bpb for p in probes}


def _state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.fixture(scope="module")
def loaded(tiny_pair):
    base, adapted = tiny_pair
    model, tok = load_model(adapted)
    with CheckpointReader(base) as b, CheckpointReader(adapted) as a:
        yield model, tok, LayerRestorer(model, b, a), base


def test_restorer_round_trip_and_full_restore_is_base(loaded):
    model, tok, restorer, base = loaded
    before = _state(model)
    measure = _measure(tok)
    with restorer.restored([None, 0, 1, 2, 3]):
        as_base = measure(model)
    after = _state(model)
    assert all(torch.equal(before[k], after[k]) for k in before)
    base_model, _ = load_model(base)
    assert as_base == measure(base_model)


def test_activation_cache_gives_identical_numbers(loaded):
    model, tok, restorer, _ = loaded
    measure = _measure(tok)
    plain = Ablation(model, restorer, measure, 4, use_cache=False)
    cached = Ablation(model, restorer, measure, 4, use_cache=True)
    r1, r2 = plain.run(), cached.run()
    assert r1["per_layer"] == r2["per_layer"] and r1["base"] == r2["base"]
    assert r2["cache_bytes"] > 0
    sel = {"ablation@2": [1, 3], "depth@2": [0, 1]}
    assert plain.run_selections(sel) == cached.run_selections(sel)
    # harm is adapted − restored, per probe
    assert r2["harm"]["general"][2] == pytest.approx(
        r2["adapted"]["general"] - r2["per_layer"][2]["general"]
    )


def test_selection_quality_fractions():
    abl = {
        "adapted": {"general": 1.5, "finance": 1.0},
        "base": {"general": 1.0, "finance": 1.2},
        "selections": {
            "ablation@1": {"layers": [0], "scores": {"general": 1.2, "finance": 1.05}},
            "score@1": {"layers": [2], "scores": {"general": 1.35, "finance": 1.02}},
        },
    }
    q = selection_quality(abl, 1, "general", "finance")
    assert q["ablation"]["recovered"] == pytest.approx(0.6)
    assert q["score"]["recovered"] == pytest.approx(0.3)
    assert q["score"]["ratio_vs_ablation"] == pytest.approx(0.5)
    assert q["score"]["gain_kept"] == pytest.approx(0.9)
