"""Pure kernels of the train package: wrapping, packing, splits, replay schedule, lr, specials."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest
import torch

from spear_mm.errors import UserError
from spear_mm.train.optim import lr_factor
from spear_mm.train.packing import (
    IGNORE_INDEX,
    BlockStream,
    as_fraction,
    pack,
    split_documents,
    wrap_document,
)
from spear_mm.train.specials import document_specials


def test_wrap_document_adds_only_given_specials():
    assert wrap_document([5, 6], 1, 2) == [1, 5, 6, 2]
    assert wrap_document([5, 6], None, 2) == [5, 6, 2]
    assert wrap_document([], None, 2) == [2]


def _docs():
    gen = torch.Generator().manual_seed(3)
    lengths = [7, 1, 13, 4, 9, 30, 2]
    return [torch.randint(3, 50, (n,), generator=gen).tolist() for n in lengths]


@pytest.mark.parametrize("seq_len", [4, 8, 11, 66])
def test_pack_drop_is_the_stream_cut_into_blocks(seq_len):
    docs = _docs()
    stream = [t for d in docs for t in d]
    blocks = pack(docs, seq_len, "drop", pad_id=0)
    n = len(stream) // seq_len
    assert len(blocks) == n
    assert blocks.tokens.flatten().tolist() == stream[: n * seq_len]
    assert blocks.n_tokens == n * seq_len
    assert blocks.lengths.tolist() == [seq_len] * n


def test_pack_pad_keeps_the_remainder_with_masked_labels():
    docs = _docs()
    stream = [t for d in docs for t in d]  # 66 tokens
    blocks = pack(docs, 8, "pad", pad_id=99)
    assert len(blocks) == math.ceil(len(stream) / 8)
    rest = len(stream) % 8
    assert blocks.lengths[-1] == rest
    assert blocks.n_tokens == len(stream)
    ids, labels = blocks.batch(torch.tensor([len(blocks) - 1, 0]))
    assert ids[0, :rest].tolist() == stream[-rest:]
    assert ids[0, rest:].tolist() == [99] * (8 - rest)
    assert labels[0, rest:].tolist() == [IGNORE_INDEX] * (8 - rest)
    assert labels[0, :rest].tolist() == stream[-rest:]
    assert labels[1].tolist() == stream[:8]
    assert ids.dtype == labels.dtype == torch.int64


def test_split_documents_disjoint_deterministic():
    train, val = split_documents(40, 0.1, seed=0)
    assert len(val) == 4 and len(train) == 36
    assert sorted(train + val) == list(range(40))
    assert (train, val) == split_documents(40, 0.1, seed=0)
    assert split_documents(2, 0.01, 0)[1] and split_documents(2, 0.49, 0)[0]  # one each side
    with pytest.raises(ValueError):
        split_documents(1, 0.1, 0)


@pytest.mark.parametrize("ratio", [0.0, 0.1, 0.25, 1 / 3, 0.5, 0.9])
def test_replay_ratio_is_exact_on_every_prefix(ratio):
    stream = BlockStream(n_domain=17, n_general=5, ratio=ratio, seed=1)
    r = as_fraction(ratio)
    general = 0
    for k in range(1, 400):
        source, index = stream.locate(k - 1)
        general += source
        assert general == math.floor(k * r)  # independent count of the schedule's promise
        assert 0 <= index < stream.sizes[source]


def test_block_stream_visits_every_block_once_per_epoch_and_is_seeded():
    stream = BlockStream(n_domain=10, n_general=3, ratio=0.25, seed=7)
    located = [stream.locate(p) for p in range(40)]  # 30 domain + 10 general positions
    domain = [i for s, i in located if s == 0]
    general = [i for s, i in located if s == 1]
    assert sorted(domain[:10]) == list(range(10)) and sorted(domain[10:20]) == list(range(10))
    assert sorted(general[:3]) == list(range(3))
    assert domain[:10] != domain[10:20]  # a new permutation each epoch
    again = BlockStream(10, 3, 0.25, seed=7)
    assert [again.locate(p) for p in reversed(range(40))] == located[::-1]  # pure in position
    other = BlockStream(10, 3, 0.25, seed=8)
    assert [other.locate(p) for p in range(40)] != located


def test_as_fraction_uses_the_decimal_spelling():
    assert as_fraction(0.1) == Fraction(1, 10)
    assert as_fraction(0.25) == Fraction(1, 4)


def test_lr_factor_warmup_then_cosine_to_min():
    total, warm = 11, 3
    f = [lr_factor(s, warm, total, 0.1) for s in range(total)]
    assert f[:3] == [1 / 3, 2 / 3, 1.0]
    assert f[-1] == pytest.approx(0.1)
    mid = warm + (total - 1 - warm) / 2  # half-way through the cosine: (1 + min) / 2
    assert lr_factor(int(mid), warm, total, 0.1) == pytest.approx(
        0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (int(mid) - warm) / (total - 1 - warm)))
    )
    assert all(a >= b for a, b in zip(f[2:], f[3:]))
    assert lr_factor(0, 0, 1, 0.1) == 1.0


class _Tok:
    """Just what document_specials reads from a tokenizer."""

    def __init__(self, vocab, bos=None, eos=None, pad=None):
        self._vocab = vocab
        self.bos_token_id = vocab.get(bos)
        self.eos_token_id = vocab.get(eos)
        self.pad_token_id = vocab.get(pad)

    def get_vocab(self):
        return self._vocab


def test_specials_llama3_uses_end_of_text_not_eot():
    vocab = {"<|begin_of_text|>": 128000, "<|end_of_text|>": 128001, "<|eot_id|>": 128009}
    sp = document_specials(_Tok(vocab, "<|begin_of_text|>", "<|eot_id|>"))
    assert (sp.bos, sp.eos, sp.pad) == (128000, 128001, 128001)


def test_specials_endoftext_family_and_fallback_and_overrides():
    smol = {"<|endoftext|>": 0, "<|im_start|>": 1, "<|im_end|>": 2, "a": 3}
    sp = document_specials(_Tok(smol, "<|im_start|>", "<|im_end|>", "<|im_end|>"))
    assert (sp.bos, sp.eos, sp.pad) == (None, 0, 2)
    llama2 = {"<s>": 1, "</s>": 2, "x": 3}
    sp = document_specials(_Tok(llama2, "<s>", "</s>"))
    assert (sp.bos, sp.eos) == (1, 2)
    sp = document_specials(_Tok(llama2, "<s>", "</s>"), bos_token="", eos_token="x")
    assert (sp.bos, sp.eos) == (None, 3)
    with pytest.raises(UserError, match="data.eos_token"):
        document_specials(_Tok(llama2, "<s>", "</s>"), eos_token="nope")
    with pytest.raises(UserError, match="data.eos_token"):
        document_specials(_Tok({"x": 0}))
