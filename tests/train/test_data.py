"""Loading, tokenizing, splitting and packing real files with the tiny byte tokenizer."""

from __future__ import annotations

import json

import pytest

from spear_mm.errors import UserError
from spear_mm.testing import make_tokenizer
from spear_mm.train.config import DataConfig
from spear_mm.train.data import SPLIT_SEED, build_data, load_texts
from spear_mm.train.packing import split_documents


def test_build_data_packs_train_and_val_documents_exactly(corpora):
    tok = make_tokenizer()
    cfg = DataConfig(
        domain=str(corpora[0]),
        general=str(corpora[1]),
        seq_len=16,
        val_fraction=0.1,
        val_max_blocks=1000,
    )
    data = build_data(cfg, tok)
    texts = [json.loads(line)["text"] for line in corpora[0].read_text().splitlines()]
    train_idx, val_idx = split_documents(len(texts), 0.1, SPLIT_SEED)
    eos = tok.convert_tokens_to_ids("<|endoftext|>")
    assert data.specials.bos is None and data.specials.eos == eos
    for idx, blocks in ((train_idx, data.domain), (val_idx, data.val["domain"])):
        stream = []
        for i in idx:
            stream += tok(texts[i], add_special_tokens=False)["input_ids"] + [eos]
        n = len(stream) // 16
        assert blocks.tokens.flatten().tolist() == stream[: n * 16]
    assert set(data.val) == {"domain", "general"}
    # held-out documents never reach the training stream (each text starts with "fin<i>:")
    train_text = tok.decode(data.domain.tokens.flatten().tolist())
    assert all(f"fin{i}:" not in train_text for i in val_idx)
    assert all(f"fin{i}:" in train_text for i in train_idx[:-1])  # the last may be cut off


def test_val_max_blocks_caps_validation(corpora):
    data = build_data(
        DataConfig(domain=str(corpora[0]), general=None, seq_len=16, val_max_blocks=3),
        make_tokenizer(),
    )
    assert len(data.val["domain"]) == 3 and "general" not in data.val


def test_text_folder_and_json_sources(tmp_path):
    (tmp_path / "b.txt").write_text("second document")
    (tmp_path / "a.txt").write_text("first document")
    (tmp_path / "c.json").write_text(json.dumps(["third", {"text": "fourth"}]))
    cfg = DataConfig()
    assert load_texts(str(tmp_path), "data.domain", cfg) == [
        "first document",
        "second document",
        "third",
        "fourth",
    ]


def test_bad_sources_name_the_key(tmp_path):
    cfg = DataConfig()
    bad = tmp_path / "x.jsonl"
    bad.write_text('{"body": "no text field"}\n{"body": "x"}\n')
    with pytest.raises(UserError, match=r"^data.domain: .*data.text_field"):
        load_texts(str(bad), "data.domain", cfg)
    with pytest.raises(UserError, match="held out for evaluation"):
        load_texts("finance_heldout", "data.general", cfg)
    with pytest.raises(UserError, match="unknown built-in"):
        load_texts("builtin:nope", "data.domain", cfg)
    (tmp_path / "x.csv").write_text("a,b\n")
    with pytest.raises(UserError, match="unsupported file type"):
        load_texts(str(tmp_path / "x.csv"), "data.domain", cfg)


def test_gzip_jsonl_bom_and_single_text_file(tmp_path):
    import gzip

    cfg = DataConfig()
    rows = "".join(json.dumps({"text": f"doc {i}"}) + "\n" for i in range(3))
    with gzip.open(tmp_path / "c.jsonl.gz", "wt", encoding="utf-8") as fh:
        fh.write(rows)
    assert load_texts(str(tmp_path / "c.jsonl.gz"), "data.domain", cfg) == [
        "doc 0",
        "doc 1",
        "doc 2",
    ]
    bom = tmp_path / "bom.jsonl"
    bom.write_bytes("\ufeff".encode() + rows.encode())  # what Windows editors write
    assert load_texts(str(bom), "data.domain", cfg) == ["doc 0", "doc 1", "doc 2"]
    # A folder picks up compressed files too.
    folder = tmp_path / "f"
    folder.mkdir()
    (folder / "c.jsonl.gz").write_bytes((tmp_path / "c.jsonl.gz").read_bytes())
    assert load_texts(str(folder), "data.domain", cfg) == ["doc 0", "doc 1", "doc 2"]
    one = tmp_path / "book.txt"
    one.write_text("A whole book in one file.")
    with pytest.raises(UserError, match=r"several \.txt files in one folder.*\.jsonl"):
        load_texts(str(one), "data.domain", cfg)
    (tmp_path / "cut.jsonl.gz").write_bytes((tmp_path / "c.jsonl.gz").read_bytes()[:20])
    with pytest.raises(UserError, match="cut.jsonl.gz"):
        load_texts(str(tmp_path / "cut.jsonl.gz"), "data.domain", cfg)


def test_hub_dataset_names_go_through_load_dataset(monkeypatch):
    import datasets

    calls = []

    def fake(name, config, split):
        calls.append((name, config, split))
        return datasets.Dataset.from_dict({"body": ["one", "", "two"], "id": [1, 2, 3]})

    monkeypatch.setattr(datasets, "load_dataset", fake)
    cfg = DataConfig(text_field="body", hf_config="en", hf_split="train[:3]")
    assert load_texts("org/finance-news", "data.domain", cfg) == ["one", "two"]
    assert calls == [("org/finance-news", "en", "train[:3]")]
    with pytest.raises(UserError, match="has no column 'text'"):
        load_texts("org/finance-news", "data.domain", DataConfig())


def test_unloadable_dataset_name_is_one_line_user_error():
    # offline (HF_DATASETS_OFFLINE=1 in conftest): the hub cannot answer
    with pytest.raises(UserError, match="not a file, a built-in corpus") as err:
        load_texts("no-such-org/no-such-dataset", "data.domain", DataConfig())
    assert "\n" not in str(err.value)
