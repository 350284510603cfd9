"""The bundled text corpora: finance and general English, train and held-out splits.

Five gzip-compressed JSON-lines files ship in `spear_mm/data/` (built by
`scripts/build_corpora.py`; sources, licences and the split rule are in
`spear_mm/data/PROVENANCE.md`). Each line is `{"text": ..., "source": ..., "id": ...}` with
`source` one of `reuters`, `gnucash` (finance) or `austen`, `wordnet` (general);
`finance_large_train` adds the train-only finance sources `gnucash_help`, `kmymoney`, `ledger`.

A train split and its held-out split never share a document: they are split by whole units
(a news story, a guide chapter, a novel chapter, a group of dictionary glosses). Records are
stored in a fixed, seeded shuffled order, so any prefix of a split mixes its sources; every
call returns them in that order.

Stdlib only: importing this module is cheap.
"""

from __future__ import annotations

import functools
import gzip
import json
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

from spear_mm.errors import UserError

CORPORA = (
    "finance_train",
    "finance_heldout",
    "general_train",
    "general_heldout",
    "finance_large_train",
    "finance_large_heldout",
)
# What training may read (finance_large_train: finance_train plus four fifths of three
# accounting manuals, the study's CPT corpus) and what it must not (the held-out splits the
# probes read; finance_large_heldout adds the manuals' other chapters to finance_heldout).
TRAIN_CORPORA = tuple(name for name in CORPORA if name.endswith("_train"))
HELDOUT_CORPORA = tuple(name for name in CORPORA if name.endswith("_heldout"))


def corpus_path(name: str) -> Path:
    """Path of the bundled file for corpus `name` (one of `CORPORA`).

    Raises `UserError` for an unknown name; the file itself is not opened.
    """
    if name not in CORPORA:
        raise UserError(
            f"corpus {name!r} in spear_mm.io.corpora: unknown name; use one of {', '.join(CORPORA)}"
        )
    return Path(str(resources.files("spear_mm").joinpath("data", f"{name}.jsonl.gz")))


@functools.lru_cache(maxsize=len(CORPORA))
def _read(name: str) -> tuple[tuple[str, str, str], ...]:
    # Cached as immutable tuples; callers get fresh lists and dicts they may mutate.
    path = corpus_path(name)
    if not path.is_file():
        raise UserError(
            f"corpus file {path} in spear_mm/data: missing; "
            "reinstall spear_mm or run scripts/build_corpora.py"
        )
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        rows = [json.loads(line) for line in fh if line.strip()]
    return tuple((r["text"], r["source"], r["id"]) for r in rows)


def load_records(name: str) -> list[dict[str, str]]:
    """All records of corpus `name` as dicts with keys `text`, `source`, `id`, in file order."""
    return [{"text": t, "source": s, "id": i} for t, s, i in _read(name)]


def load_documents(name: str, sources: Sequence[str] | str | None = None) -> list[str]:
    """Document texts of corpus `name`, in file order, optionally only from `sources`.

    `sources` may be one source name or a sequence of them; `None` keeps all. A source that
    the corpus does not contain raises `UserError` naming the sources it does contain (an
    empty result would otherwise pass silently through a probe).
    """
    rows = _read(name)
    if sources is None:
        return [t for t, _, _ in rows]
    wanted = {sources} if isinstance(sources, str) else set(sources)
    present = sorted({s for _, s, _ in rows})
    missing = sorted(wanted - set(present))
    if missing or not wanted:
        raise UserError(
            f"sources {missing or '[]'} in corpus {name!r}: not in this corpus; "
            f"use some of {', '.join(present)}"
        )
    return [t for t, s, _ in rows if s in wanted]
