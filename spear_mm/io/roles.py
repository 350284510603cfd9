"""Three disjoint text roles for every held-out corpus: calibration, selection, test.

A number that chose something cannot also be the evidence that the choice was good. Every text
that scores models therefore has exactly one role:

- ``calibration`` — what anything is fitted on: the analyzer's ablation, score specs, schedules;
- ``selection``   — what the sweep, the target solver and policy choices read;
- ``test``        — what `compare` and the report state (headline numbers).

The split is by whole documents and deterministic (no seed to forget): documents are grouped
first, so near-duplicates never straddle two roles, and a held-out document that shares any
passage with the training corpus is excluded from every role.

Near-duplicates: two documents are in one group when they share a 40-character *shingle* (a
window of 40 consecutive characters of the text lower-cased with runs of whitespace collapsed to
one space); groups are the connected components of that relation. Shingles are hashed with a
64-bit polynomial hash (numpy, vectorised); a collision would only merge two groups, never split
one.

Assignment: within each source (`reuters`, `austen`, ...; so every role mixes every source), the
groups are ordered by sha256 of their first document id and each goes to the role that is
furthest below its share of the source's characters. Documents keep their corpus order within a
role. `RoleSplit.record()` is what the stages write beside their numbers (document ids per role).
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from spear_mm.errors import UserError

ROLES = ("calibration", "selection", "test")
SHARES = (1 / 3, 1 / 3, 1 / 3)
SHINGLE = 40
SALT = "spear-mm-roles-v1"
_HASH_BASE = np.uint64(0x100000001B3)  # FNV prime: odd, so the hash is a bijection per char
_SPACE = re.compile(r"\s+")
# Held-out corpus → the training corpora it must not overlap (the bundled ones).
BUNDLED = {"finance": "finance_heldout", "general": "general_heldout"}


def normalize(text: str) -> str:
    """Lower-cased text with every run of whitespace collapsed to one space (shingling input)."""
    return _SPACE.sub(" ", text).strip().lower()


def shingle_hashes(text: str, width: int = SHINGLE) -> np.ndarray:
    """Sorted unique 64-bit hashes of the `width`-character shingles of `normalize(text)`.

    A text shorter than `width` is one shingle (itself); an empty text has none.
    """
    norm = normalize(text)
    if not norm:
        return np.zeros(0, dtype=np.uint64)
    codes = np.frombuffer(norm.encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
    n = max(1, len(codes) - width + 1)
    codes = np.pad(codes, (0, max(0, width - len(codes))))
    h = np.zeros(n, dtype=np.uint64)
    with np.errstate(over="ignore"):  # arithmetic mod 2^64 on purpose
        for j in range(width):
            h = h * _HASH_BASE + codes[j : j + n]
    return _sorted_unique(h)


def _sorted_unique(values: np.ndarray) -> np.ndarray:
    # np.unique on uint64 is ~50x slower than a sort here (numpy 2.4 hashes); same result.
    out = np.sort(values)
    return out[np.concatenate(([True], out[1:] != out[:-1]))] if len(out) else out


def _union_find_groups(shingles: Sequence[np.ndarray]) -> list[int]:
    """Group label (the smallest member index) per document; shared shingle = same group."""
    parent = list(range(len(shingles)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    if shingles:
        values = np.concatenate(shingles)
        owner = np.concatenate([np.full(len(s), i) for i, s in enumerate(shingles)])
        order = np.argsort(values, kind="stable")
        values, owner = values[order], owner[order]
        same = np.nonzero(values[1:] == values[:-1])[0]
        for k in same:
            a, b = root(int(owner[k])), root(int(owner[k + 1]))
            if a != b:
                parent[max(a, b)] = min(a, b)
    return [root(i) for i in range(len(shingles))]


def near_duplicate_groups(texts: Sequence[str], width: int = SHINGLE) -> list[int]:
    """Group label per text: texts sharing a `width`-character shingle share a label."""
    return _union_find_groups([shingle_hashes(t, width) for t in texts])


def train_shingles(texts: Sequence[str], width: int = SHINGLE) -> np.ndarray:
    """Sorted unique shingle hashes of a training corpus (to exclude held-out overlaps)."""
    parts = [shingle_hashes(t, width) for t in texts]
    return _sorted_unique(np.concatenate(parts)) if parts else np.zeros(0, dtype=np.uint64)


@dataclass(frozen=True)
class RoleSplit:
    """Document ids per role (corpus order), excluded ids with reasons, multi-document groups."""

    roles: dict[str, tuple[str, ...]]
    excluded: dict[str, str] = field(default_factory=dict)
    groups: tuple[tuple[str, ...], ...] = ()
    corpus: str = ""

    def ids(self, role: str) -> tuple[str, ...]:
        check_role(role)
        return self.roles[role]

    def record(self) -> dict:
        """JSON-able description written beside every number scored on this corpus."""
        return {
            "corpus": self.corpus,
            "rule": f"{SALT}: {SHINGLE}-char shingle groups, shares {list(SHARES)}",
            "roles": {r: list(v) for r, v in self.roles.items()},
            "excluded": dict(self.excluded),
            "near_duplicate_groups": [list(g) for g in self.groups],
        }


def check_role(role: str) -> str:
    if role not in ROLES:
        raise UserError(f"text role {role!r}: unknown; use one of {', '.join(ROLES)}")
    return role


def _assign(sizes: dict[int, int], keys: dict[int, str]) -> dict[int, str]:
    """Group → role, groups taken in sha256 order, each to the role furthest below its share."""
    order = sorted(sizes, key=lambda g: hashlib.sha256(f"{SALT}:{keys[g]}".encode()).hexdigest())
    filled = dict.fromkeys(ROLES, 0)
    out = {}
    for g in order:
        total = sum(filled.values()) + sizes[g]
        role = max(ROLES, key=lambda r: SHARES[ROLES.index(r)] * total - filled[r])
        filled[role] += sizes[g]
        out[g] = role
    return out


def split_roles(
    records: Sequence[dict], train: np.ndarray | None = None, corpus: str = ""
) -> RoleSplit:
    """Split `records` (dicts with `text`, `id`, optional `source`) into the three roles.

    `train` is `train_shingles(...)` of the training corpus: records sharing a shingle with it
    are excluded. Ids must be unique (they are what the outputs record).
    """
    ids = [str(r["id"]) for r in records]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise UserError(
            f"held-out corpus {corpus or '?'}: document id {dup!r} repeats; ids must be unique"
        )
    shingles = [shingle_hashes(r["text"]) for r in records]
    excluded = {}
    if train is not None and len(train):
        for i, s in enumerate(shingles):
            pos = np.minimum(np.searchsorted(train, s), len(train) - 1)  # train is sorted
            hit = int((train[pos] == s).sum())
            if hit:
                excluded[ids[i]] = (
                    f"shares {hit} of {len(s)} {SHINGLE}-char shingles with training text"
                )
    labels = _union_find_groups(shingles)
    keep = [i for i in range(len(records)) if ids[i] not in excluded and len(shingles[i])]
    # A group is named by its smallest id, so the split does not depend on the records' order.
    key: dict[int, int] = {}
    for i in range(len(records)):
        key[labels[i]] = min(key.get(labels[i], i), i, key=lambda j: ids[j])
    by_source: dict[str, dict[int, int]] = {}
    for i in keep:
        source = str(records[key[labels[i]]].get("source", ""))
        sizes = by_source.setdefault(source, {})
        sizes[labels[i]] = sizes.get(labels[i], 0) + len(records[i]["text"])
    role_of: dict[int, str] = {}
    for sizes in by_source.values():
        role_of.update(_assign(sizes, {g: ids[key[g]] for g in sizes}))
    roles = {r: tuple(ids[i] for i in keep if role_of[labels[i]] == r) for r in ROLES}
    members: dict[int, list[str]] = {}
    for i in range(len(records)):
        members.setdefault(labels[i], []).append(ids[i])
    groups = tuple(tuple(m) for m in members.values() if len(m) > 1)
    return RoleSplit(roles, excluded, groups, corpus)


@functools.lru_cache(maxsize=1)
def _bundled_train() -> np.ndarray:
    from spear_mm.io.corpora import TRAIN_CORPORA, load_documents

    # finance_large_train repeats finance_train's documents: each text is shingled once.
    texts = dict.fromkeys(t for name in TRAIN_CORPORA for t in load_documents(name))
    return train_shingles(list(texts))


def _corpus_records(spec: str, key: str) -> list[dict]:
    """Records of a bundled corpus name or of a file / folder (spear_mm.io.textfiles)."""
    from pathlib import Path

    from spear_mm.io.corpora import CORPORA, load_records

    if spec in CORPORA:
        return load_records(spec)
    path = Path(spec).expanduser()
    if not path.exists():
        raise UserError(
            f"{key}={spec!r}: no such file or folder, and not a bundled corpus "
            f"({', '.join(CORPORA)}); give a .jsonl/.txt file or a folder of them"
        )
    from spear_mm.io.textfiles import read_records

    return [r for r in read_records(path, key) if r["text"].strip()]


@functools.lru_cache(maxsize=8)
def _exclude_shingles(exclude: tuple[str, ...]) -> np.ndarray:
    parts = [_bundled_train()]
    parts += [train_shingles([r["text"] for r in _corpus_records(s, "exclude")]) for s in exclude]
    return _sorted_unique(np.concatenate(parts))


@functools.lru_cache(maxsize=8)
def _heldout(corpus: str, exclude: tuple[str, ...], key: str) -> tuple[tuple, RoleSplit]:
    records = _corpus_records(corpus, key)
    split = split_roles(records, _exclude_shingles(exclude), corpus)
    if not all(split.roles.values()):
        sizes = ", ".join(f"{r} {len(v)}" for r, v in split.roles.items())
        raise UserError(
            f"{key}={corpus!r}: {len(records)} documents give an empty role ({sizes}, "
            f"{len(split.excluded)} excluded as overlapping training text); "
            "a held-out corpus needs at least 3 distinct documents, ideally 30 or more"
        )
    return tuple(records), split


def heldout_split(
    corpus: str, exclude: Sequence[str] = (), key: str = "heldout"
) -> tuple[list[dict], RoleSplit]:
    """The records of a held-out corpus (a bundled name, a file or a folder) and their role split.

    Documents sharing a 40-character shingle with the bundled training corpora or with any
    corpus in `exclude` (names, files or folders: the CPT's own training text) are excluded from
    every role. Cached per (corpus, exclude); `key` names the config key in errors.
    """
    records, split = _heldout(str(corpus), tuple(str(e) for e in exclude), key)
    return [dict(r) for r in records], split


def bundled_split(probe: str) -> RoleSplit:
    """The role split of a bundled held-out corpus (`finance` or `general`), cached."""
    if probe not in BUNDLED:
        raise UserError(f"probe '{probe}' is unknown; choose one of {', '.join(BUNDLED)}")
    return heldout_split(BUNDLED[probe])[1]


def role_records(records: Sequence[dict], split: RoleSplit, role: str) -> list[dict]:
    """The records of `role` in corpus order."""
    wanted = set(split.ids(role))
    return [r for r in records if str(r["id"]) in wanted]
