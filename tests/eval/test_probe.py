"""bits-per-byte probe: windowing, token budget, byte counting, determinism."""

from __future__ import annotations

import math

import pytest
import torch

from spear_mm.errors import UserError
from spear_mm.eval import probe as P
from spear_mm.train.specials import document_start

TEXTS = [
    "The quick brown fox jumps over the lazy dog. " * 9,
    "Short.",
    "Ünïcödé — naïve café, 3½ ≠ 4. " * 4,
    "",
    "x",
]


def _reference_nll(model, tok, texts, seq_len):
    """NLL by lm-eval's own window generator, one unbatched forward per window."""
    from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

    total = 0.0
    for text in texts:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        windows = get_rolling_token_windows(ids, document_start(tok), seq_len, context_len=1)
        for ctx, cont in map(make_disjoint_window, windows):
            full = (ctx + cont)[-(seq_len + 1) :]
            inp = torch.tensor([full[:-1]])
            with torch.no_grad():
                logp = torch.log_softmax(model(input_ids=inp).logits[0].double(), -1)
            tgt = torch.tensor(full[1:])
            lp = logp[torch.arange(len(tgt)), tgt][-len(cont) :]
            total -= float(lp.sum())
    return total


@pytest.mark.parametrize("seq_len", [16, 64, 1024])
def test_matches_lm_eval_windows(tiny_loaded, seq_len):
    model, tok = tiny_loaded
    got = P.bits_per_byte(model, tok, TEXTS, max_tokens=10**6, seq_len=seq_len, batch_size=3)
    ref = _reference_nll(model, tok, TEXTS, seq_len)
    n_bytes = sum(len(t.encode("utf-8")) for t in TEXTS)
    assert got.n_bytes == n_bytes
    assert got.n_tokens == sum(len(tok(t, add_special_tokens=False)["input_ids"]) for t in TEXTS)
    assert got.nll_nats == pytest.approx(ref, rel=1e-5)
    assert got.bpb == pytest.approx(ref / (math.log(2) * n_bytes), rel=1e-5)


def test_large_vocab_peaked_model_is_accurate(tmp_path):
    """With a 49k vocabulary and peaked logits the probe stays within fp32 accuracy of an fp64
    reference (a softmax over a strided dim was ~3e-6 off here, ~4e-5 on SmolLM2)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from spear_mm.testing import make_tiny_llama

    folder = make_tiny_llama(tmp_path / "m", vocab_size=49152, hidden=64, num_layers=1, seed=2)
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    tok = AutoTokenizer.from_pretrained(folder)
    with torch.no_grad():
        model.get_input_embeddings().weight.mul_(8.0)  # tied: peaked, context-dependent logits
    texts = TEXTS[:3]
    got = P.bits_per_byte(model, tok, texts, max_tokens=10**6, seq_len=48, batch_size=4)
    assert got.nll_nats == pytest.approx(_reference_nll(model, tok, texts, 48), rel=5e-7)


def test_rolling_windows_cover_every_token_once():
    for n in (1, 5, 16, 17, 33, 64, 100):
        wins = P._rolling_windows(n, 16)
        scored = []
        for start, end, k in wins:
            assert end - start <= 16 and 1 <= k <= end - start
            scored += list(range(end - k, end))
        assert scored == list(range(n))


def test_token_budget_truncates_and_counts_covered_bytes(tiny_loaded):
    model, tok = tiny_loaded
    texts = ["héllo wörld " * 20, "never reached " * 10]
    res = P.bits_per_byte(model, tok, texts, max_tokens=50, seq_len=32)
    assert res.n_tokens == 50
    # The byte-level test tokenizer has one token per UTF-8 byte: 50 tokens are 50 bytes, and
    # the cut may fall inside a 2-byte character, which then counts whole.
    assert res.n_bytes in (50, 51)
    prefix_ids = tok(texts[0], add_special_tokens=False)["input_ids"][:50]
    prefix_text = tok.decode(prefix_ids)
    full = P.bits_per_byte(model, tok, [prefix_text], max_tokens=10**6, seq_len=32)
    assert res.nll_nats == pytest.approx(full.nll_nats, rel=1e-6)


def test_deterministic_and_batch_size_invariant(tiny_loaded):
    model, tok = tiny_loaded
    a = P.bits_per_byte(model, tok, TEXTS, max_tokens=200, seq_len=32, batch_size=4)
    b = P.bits_per_byte(model, tok, TEXTS, max_tokens=200, seq_len=32, batch_size=4)
    c = P.bits_per_byte(model, tok, TEXTS, max_tokens=200, seq_len=32, batch_size=1)
    assert a == b  # bit-identical
    assert a.bpb == pytest.approx(c.bpb, rel=1e-6)


def test_restores_training_mode_and_needs_no_grad(tiny_loaded):
    model, tok = tiny_loaded
    model.train()
    try:
        P.bits_per_byte(model, tok, ["abc def"], max_tokens=10)
        assert model.training
    finally:
        model.eval()
    assert all(p.grad is None for p in model.parameters())


def test_bf16_autocast_is_close(tiny_loaded, monkeypatch):
    from spear_mm.train import runtime

    monkeypatch.setattr(runtime, "cpu_has_bf16", lambda: True)  # bf16 runs even where emulated
    model, tok = tiny_loaded
    fp32 = P.bits_per_byte(model, tok, TEXTS, seq_len=32, autocast_bf16=False)
    bf16 = P.bits_per_byte(model, tok, TEXTS, seq_len=32, autocast_bf16=True)
    assert bf16.bpb != fp32.bpb  # it did run in bf16
    assert bf16.bpb == pytest.approx(fp32.bpb, rel=2e-2)


def test_bf16_autocast_is_set_aside_where_the_cpu_emulates_it(tiny_loaded, monkeypatch, capsys):
    from spear_mm.train import runtime

    monkeypatch.setattr(runtime, "cpu_has_bf16", lambda: False)
    P._warn_emulated_bf16.cache_clear()
    model, tok = tiny_loaded
    fp32 = P.bits_per_byte(model, tok, TEXTS, seq_len=32, autocast_bf16=False)
    asked = P.bits_per_byte(model, tok, TEXTS, seq_len=32, autocast_bf16=True)
    assert asked.bpb == fp32.bpb  # scored in fp32, bit for bit
    assert "emulates it, so the probes score in fp32" in capsys.readouterr().err


def test_bad_inputs(tiny_loaded):
    model, tok = tiny_loaded
    with pytest.raises(UserError, match="no tokens"):
        P.bits_per_byte(model, tok, ["", ""])
    with pytest.raises(UserError, match="max_tokens"):
        P.bits_per_byte(model, tok, ["a"], max_tokens=0)
    with pytest.raises(UserError, match="unknown"):
        P.probe_texts("legal")


def test_interleave_by_source():
    recs = [
        {"text": "a1", "source": "a"},
        {"text": "a2", "source": "a"},
        {"text": "b1", "source": "b"},
        {"text": "a3", "source": "a"},
    ]
    assert P.interleave_by_source(recs) == ["a1", "b1", "a2", "a3"]
    assert P.interleave_by_source(["x", "y"]) == ["x", "y"]


def test_probe_texts_come_from_the_heldout_corpora():
    from spear_mm.io.corpora import load_records

    for name, corpus in (("general", "general_heldout"), ("finance", "finance_heldout")):
        texts = P.probe_texts(name)
        records = load_records(corpus)
        assert sorted(texts) == sorted(r["text"] for r in records)
        # The first documents alternate between the sources.
        first_two = {next(r["source"] for r in records if r["text"] == t) for t in texts[:2]}
        assert len(first_two) == 2


def test_probe_class_caches_windows(tiny_loaded):
    model, tok = tiny_loaded
    probe = P.Probe("t", texts=tuple(TEXTS), max_tokens=100, seq_len=32)
    w1 = probe.windows(tok)
    assert probe.windows(tok) is w1
    direct = P.bits_per_byte(model, tok, TEXTS, max_tokens=100, seq_len=32)
    assert probe.score(model, tok) == direct


def _training_predecessors(tok, texts):
    """The token before each document's first token in a packed training stream."""
    from spear_mm.train.data import tokenize
    from spear_mm.train.specials import document_specials

    docs = tokenize(tok, list(texts), document_specials(tok))
    stream = [t for d in docs for t in d]
    out, at = [], 0
    for d, text in zip(docs, texts):
        first = len(d) - len(tok(text, add_special_tokens=False)["input_ids"]) - 1  # EOS last
        out.append(stream[at + first - 1] if at + first > 0 else None)
        at += len(d)
    return out


def _probe_starts(tok, texts):
    win = P.build_windows(tok, texts, max_tokens=10**6, seq_len=64)
    starts = [
        win.inputs[i][0]
        for i in range(len(win.inputs))
        if i == 0 or win.row_doc[i] != win.row_doc[i - 1]
    ]
    return starts


def _chat_bos_tokenizer():
    """The test tokenizer with SmolLM2-Instruct's choice of BOS: the chat marker."""
    from spear_mm.testing import make_tokenizer

    tok = make_tokenizer()
    tok.bos_token = "<|im_start|>"
    return tok


@pytest.mark.parametrize("make", ["plain", "chat_bos"])
def test_probe_start_token_equals_trainings(make):
    from spear_mm.testing import make_tokenizer

    tok = make_tokenizer() if make == "plain" else _chat_bos_tokenizer()
    texts = ["First document.", "Second one, longer than the first.", "Third."]
    before = _training_predecessors(tok, texts)
    # Every document after the first follows the previous one's end-of-document token.
    assert _probe_starts(tok, texts) == [before[1]] * len(texts) == before[1:] + [before[1]]
    assert tok.convert_ids_to_tokens(before[1]) == "<|endoftext|>"


@pytest.mark.slow
def test_probe_start_token_equals_trainings_on_smollm2():
    from transformers import AutoTokenizer

    from spear_mm.io.sources import resolve_model

    tok = AutoTokenizer.from_pretrained(resolve_model("smollm2-135m"))
    assert tok.bos_token == "<|im_start|>"  # the chat marker the probe used to start from
    texts = ["Revenue rose 5% in the quarter.", "The board approved a dividend."]
    before = _training_predecessors(tok, texts)
    assert _probe_starts(tok, texts) == [before[1]] * 2
    assert tok.convert_ids_to_tokens(before[1]) == "<|endoftext|>"


def test_per_document_records_sum_to_the_totals(tiny_loaded):
    model, tok = tiny_loaded
    probe = P.Probe(
        "t", texts=tuple(TEXTS), ids=tuple(f"doc{i}" for i in range(5)), max_tokens=420, seq_len=16
    )
    res = probe.score(model, tok)
    docs = res.docs
    assert docs.ids == ("doc0", "doc1", "doc2")  # the budget ends inside doc2
    assert math.fsum(docs.nll) == pytest.approx(res.nll_nats, rel=1e-12)
    assert sum(docs.n_bytes) == res.n_bytes and sum(docs.n_tokens) == res.n_tokens == 420
    rec = res.record()
    assert rec["docs"]["ids"] == list(docs.ids) and len(rec["docs"]["nll"]) == len(docs.ids)
    # A document scored alone gives the same NLL as inside the probe (windows never mix texts).
    alone = P.bits_per_byte(model, tok, [TEXTS[1]], max_tokens=10**6, seq_len=16)
    assert docs.nll[1] == pytest.approx(alone.nll_nats, rel=1e-6)


def test_named_probe_reads_one_role():
    from spear_mm.io import roles

    for role in roles.ROLES:
        probe = P.Probe.named("finance", role=role, max_tokens=64)
        assert set(probe.ids) == set(roles.bundled_split("finance").ids(role))
        assert probe.settings()["role"] == role


def test_doc_max_tokens_spreads_the_budget_over_more_documents(tiny_loaded):
    model, tok = tiny_loaded
    texts = ["alpha beta gamma " * 20, "delta epsilon " * 20, "zeta eta theta " * 20]
    capped = P.Probe("c", texts=tuple(texts), max_tokens=90, seq_len=16, doc_max_tokens=30)
    res = capped.score(model, tok)
    assert res.docs.n_tokens == (30, 30, 30) and res.n_tokens == 90
    plain = P.bits_per_byte(model, tok, texts, max_tokens=90, seq_len=16)
    assert len(plain.docs.ids) == 1  # without the cap the first text takes the whole budget
    head = P.bits_per_byte(model, tok, [texts[1]], max_tokens=30, seq_len=16)
    assert res.docs.nll[1] == pytest.approx(head.nll_nats, rel=1e-6)
    with pytest.raises(UserError, match="doc_max_tokens"):
        P.build_windows(tok, texts, doc_max_tokens=0)
