"""The real SmolLM2-135M: probe and lm-eval agree with its tokenizer (slow, one document)."""

from __future__ import annotations

import pytest


@pytest.mark.slow
def test_smollm2_probe_matches_lm_eval(tmp_path):
    from spear_mm.eval.harness import evaluate
    from spear_mm.eval.probe import bits_per_byte, probe_texts
    from spear_mm.io.sources import load_model

    model, tok = load_model("smollm2-135m")
    res = evaluate(
        model, ["spear_finance_ppl"], tokenizer=tok, limit=1, max_length=256,
        cache_dir=tmp_path, progress=False,
    )  # fmt: skip
    probe = bits_per_byte(
        model, tok, probe_texts("finance", role="test")[:1], max_tokens=10**6, seq_len=256
    )
    entry = res["tasks"]["spear_finance_ppl"]
    assert entry["score"] == pytest.approx(probe.bpb, rel=1e-6)
    assert 0.5 < probe.bpb < 3.0  # a trained model, not a random one (8 bits per byte)
