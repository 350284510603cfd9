"""Documents in, packed training/validation blocks out (the I/O side of `packing`).

A corpus spec is, in this order: an existing path (a `.txt` file = one document, a `.jsonl` file =
one document per line from `data.text_field`, a `.json` file = a list of strings or of objects with
that field, each optionally gzip-compressed (`.jsonl.gz`, the bundled corpora's format), a folder =
all such files in it, sorted; a UTF-8 byte-order mark is accepted), a built-in corpus (`finance_train`,
`general_train`, `finance_large_train`, optionally spelled `builtin:NAME`), or a Hugging Face dataset name loaded with
`datasets.load_dataset(spec, data.hf_config, split=data.hf_split)`. Empty documents are skipped.

Validation holds out whole documents (`data.val_fraction` of each corpus) with a split seed that
does not depend on the run seed, so runs with different seeds are scored on the same text; at
most `data.val_max_blocks` blocks of each held-out stream are used.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from spear_mm.errors import UserError
from spear_mm.io.corpora import HELDOUT_CORPORA, TRAIN_CORPORA, load_documents
from spear_mm.io.textfiles import read_records
from spear_mm.train.config import DataConfig
from spear_mm.train.packing import PackedBlocks, pack, split_documents, wrap_document
from spear_mm.train.specials import DocumentSpecials, document_specials

SPLIT_SEED = 0  # fixed on purpose: the validation text must not move with the run seed


@dataclass
class TrainData:
    """Packed training streams, validation blocks and what was done to build them."""

    domain: PackedBlocks
    general: PackedBlocks | None
    val: dict[str, PackedBlocks]
    specials: DocumentSpecials
    stats: dict = field(default_factory=dict)


def _read_path(path: Path, key: str, text_field: str) -> list[str]:
    """Documents of a file or folder (spear_mm.io.textfiles); failures are one-line UserErrors."""
    return [r["text"] for r in read_records(path, key, text_field)]


def _load_hf(spec: str, key: str, cfg: DataConfig) -> list[str]:
    import datasets  # heavy import, only when a hub dataset is asked for

    try:
        ds = datasets.load_dataset(spec, cfg.hf_config, split=cfg.hf_split)
    except Exception as exc:  # noqa: BLE001 — any loader failure is the user's spec
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(
            f"{key}: {spec!r} is not a file, a built-in corpus "
            f"({', '.join(TRAIN_CORPORA)}) or a loadable dataset ({first})"
        ) from None
    if cfg.text_field not in ds.column_names:
        raise UserError(
            f"{key}: dataset {spec!r} has no column {cfg.text_field!r} "
            f"(columns: {', '.join(ds.column_names)}); set data.text_field"
        )
    return list(ds[cfg.text_field])


def load_texts(spec: str, key: str, cfg: DataConfig) -> list[str]:
    """Documents of one corpus spec (see module doc); `key` names the config key in errors."""
    path = Path(spec).expanduser()
    name = spec.removeprefix("builtin:")
    if path.exists():
        docs = _read_path(path, key, cfg.text_field)
    elif name in HELDOUT_CORPORA:
        raise UserError(
            f"{key}: {name!r} is held out for evaluation; train on {' or '.join(TRAIN_CORPORA)}"
        )
    elif name in TRAIN_CORPORA:
        docs = load_documents(name)
    elif spec.startswith("builtin:"):
        raise UserError(
            f"{key}: unknown built-in corpus {name!r}; use one of {', '.join(TRAIN_CORPORA)}"
        )
    else:
        docs = _load_hf(spec, key, cfg)
    docs = [d for d in docs if d and d.strip()]
    if len(docs) < 2:
        how = (
            "split the text into several .txt files in one folder (then pass the folder), or "
            'write a .jsonl file with one {"text": ...} document per line'
            if path.is_file()
            else "add documents"
        )
        raise UserError(
            f"{key}: {spec!r} has {len(docs)} non-empty document(s); at least 2 are "
            f"needed to hold out a validation split: {how}"
        )
    return docs


def tokenize(tokenizer, texts: list[str], specials: DocumentSpecials) -> list[list[int]]:
    """Token ids of each document wrapped with the document BOS/EOS (no tokenizer specials)."""
    ids = tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"]
    return [wrap_document(x, specials.bos, specials.eos) for x in ids]


def _split_pack(tokenizer, texts, specials, cfg: DataConfig) -> tuple[PackedBlocks, PackedBlocks]:
    train_idx, val_idx = split_documents(len(texts), cfg.val_fraction, SPLIT_SEED)
    docs = tokenize(tokenizer, texts, specials)
    train = pack([docs[i] for i in train_idx], cfg.seq_len, cfg.remainder, specials.pad)
    val = pack([docs[i] for i in val_idx], cfg.seq_len, cfg.remainder, specials.pad)
    n = min(len(val), cfg.val_max_blocks)
    return train, PackedBlocks(val.tokens[:n], val.lengths[:n])


def build_data(cfg: DataConfig, tokenizer) -> TrainData:
    """Load, tokenize, split and pack the domain (and general) corpora."""
    specials = document_specials(tokenizer, cfg.bos_token, cfg.eos_token)
    domain, val_domain = _split_pack(
        tokenizer, load_texts(cfg.domain, "data.domain", cfg), specials, cfg
    )
    if len(domain) == 0 or len(val_domain) == 0:
        raise UserError(
            f"data.domain: {cfg.domain!r} is too short for data.seq_len={cfg.seq_len} "
            "(no full training or validation block); lower data.seq_len"
        )
    val = {"domain": val_domain}
    general = None
    if cfg.general:
        general, val_general = _split_pack(
            tokenizer, load_texts(cfg.general, "data.general", cfg), specials, cfg
        )
        if len(val_general):
            val["general"] = val_general
    stats = {
        "specials_rule": specials.rule,
        "bos": specials.bos,
        "eos": specials.eos,
        "domain_blocks": len(domain),
        "domain_tokens": domain.n_tokens,
        "general_blocks": len(general) if general is not None else 0,
        "val_blocks": {k: len(v) for k, v in val.items()},
    }
    return TrainData(domain, general, val, specials, stats)
