"""Streaming pass: tied embeddings, identical checkpoints, bounded memory, bad pairs."""

from __future__ import annotations

import gc
import math
import weakref

import pytest
import torch

from spear_mm.analyze import aggregate
from spear_mm.analyze.stream import check_pair, iter_pairs, stream_signals
from spear_mm.errors import UserError
from spear_mm.io.checkpoint import CheckpointReader
from spear_mm.testing import make_tiny_llama, perturb_checkpoint


def _records(base, adapted, **kw):
    with CheckpointReader(base) as b, CheckpointReader(adapted) as a:
        return stream_signals(b, a, device="cpu", **kw)


def test_tied_pair_analyses_embedding_once(tiny_pair):
    records, summary = _records(*tiny_pair)
    assert summary["tied_embeddings"] and summary["num_layers"] == 4
    kinds = [r.kind for r in records]
    assert kinds.count("embed") == 1 and "lm_head" not in kinds
    emb = next(r for r in records if r.kind == "embed")
    with CheckpointReader(tiny_pair[0]) as b, CheckpointReader(tiny_pair[1]) as a:
        name = emb.name
        wb, wa = b.get(name).double(), a.get(name).double()
    assert emb.signals["rel_drift"] == pytest.approx(float((wa - wb).norm() / wb.norm()), rel=1e-5)


def test_untied_pair_has_lm_head(tmp_path):
    base = make_tiny_llama(tmp_path / "b", num_layers=2, tie_embeddings=False, seed=2)
    adapted = perturb_checkpoint(base, tmp_path / "a", scale=0.02, seed=3)
    records, summary = _records(base, adapted)
    assert not summary["tied_embeddings"]
    assert [r.kind for r in records].count("lm_head") == 1


def test_identical_checkpoints_zero_change(tiny_base):
    records, summary = _records(tiny_base, tiny_base)
    aggregate.add_swci(records)
    for r in records:
        assert r.signals["rel_drift"] == 0.0 and r.signals["delta_sq"] == 0.0
        assert all(math.isfinite(v) for v in r.signals.values())
    feats = aggregate.layer_features(records, summary["num_layers"])
    for f in feats:
        assert f["rel_drift"] == 0.0 and f["norm_drift"] == 0.0 and f["swci"] == 0.0
        assert f["out_drift"] == 0.0 and f["svdr"] == 0.0 and f["top_drift"] == 0.0
        assert abs(f["one_minus_cos"]) < 1e-6


def test_layer_aggregation_is_norm_weighted(tiny_pair):
    records, summary = _records(*tiny_pair)
    feats = aggregate.layer_features(records, summary["num_layers"])
    with CheckpointReader(tiny_pair[0]) as b, CheckpointReader(tiny_pair[1]) as a:
        names = [n for n in a.names if ".layers.1." in n and a.get(n).ndim == 2]
        num = sum(float((a.get(n).double() - b.get(n).double()).norm() ** 2) for n in names)
        den = sum(float(b.get(n).double().norm() ** 2) for n in names)
    assert feats[1]["rel_drift"] == pytest.approx(math.sqrt(num / den), rel=1e-5)
    assert feats[1]["depth"] == 2.0  # L - 1 - i
    kinds, table = aggregate.kind_table(records, 4)
    assert "attn_q" in kinds and "norm_attn" in kinds and all(v is not None for v in table[0])


def test_stream_holds_one_pair_at_a_time(tmp_path):
    # Sharded checkpoint: the reader still walks tensor by tensor.
    base = make_tiny_llama(tmp_path / "b", num_layers=3, seed=4, max_shard_bytes=40_000)
    adapted = perturb_checkpoint(base, tmp_path / "a", scale=0.05, seed=5, max_shard_bytes=40_000)
    with CheckpointReader(base) as b, CheckpointReader(adapted) as a:
        assert len(a.shards) > 1
        _, tied = check_pair(b, a)
        refs: list[weakref.ref] = []
        peak = 0
        for _name, tb, ta in iter_pairs(b, a, tied):
            refs += [weakref.ref(tb), weakref.ref(ta)]
            del tb, ta
            gc.collect()
            peak = max(peak, sum(r() is not None for r in refs))
        assert peak <= 2  # never more than the current pair alive
    records, _ = _records(base, adapted)
    assert all(isinstance(v, float) for r in records for v in r.signals.values())
    assert not any(isinstance(v, torch.Tensor) for r in records for v in vars(r).values())


def test_mismatched_pair_is_a_user_error(tmp_path, tiny_base):
    other = make_tiny_llama(tmp_path / "o", num_layers=2, seed=0)
    with pytest.raises(UserError, match="layers"):
        _records(tiny_base, other)
    grown = perturb_checkpoint(tiny_base, tmp_path / "g", scale=0.01, grow_vocab=4)
    with pytest.raises(UserError, match="shape"):
        _records(tiny_base, grown)
