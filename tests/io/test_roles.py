"""Text roles: disjoint by document and by 40-character shingle, across roles and with training."""

from __future__ import annotations

import itertools
import random

import pytest

from spear_mm.errors import UserError
from spear_mm.io import roles
from spear_mm.io.corpora import TRAIN_CORPORA, load_documents, load_records


def _shingles(text: str, width: int = 40) -> set[str]:
    # Plain string slicing: an independent check of the numpy hashing in spear_mm.io.roles.
    norm = " ".join(text.split()).lower()
    return {norm[i : i + width] for i in range(max(1, len(norm) - width + 1))}


@pytest.fixture(scope="module")
def train_shingles() -> set[str]:
    out: set[str] = set()
    for name in TRAIN_CORPORA:
        for text in load_documents(name):
            out |= _shingles(text)
    return out


@pytest.mark.parametrize("probe", ["finance", "general"])
def test_bundled_roles_are_disjoint_by_document_and_shingle(probe, train_shingles):
    split = roles.bundled_split(probe)
    records = {r["id"]: r["text"] for r in load_records(roles.BUNDLED[probe])}
    ids = {r: set(split.ids(r)) for r in roles.ROLES}
    for a, b in itertools.combinations(roles.ROLES, 2):
        assert not ids[a] & ids[b], (a, b)
        sa = set().union(*(_shingles(records[i]) for i in ids[a]))
        sb = set().union(*(_shingles(records[i]) for i in ids[b]))
        assert not sa & sb, (probe, a, b)
    for role in roles.ROLES:
        assert len(ids[role]) >= 8, role  # every role has documents to bootstrap over
        for i in ids[role]:
            assert not _shingles(records[i]) & train_shingles, (role, i)
    # Every document is in one role or excluded with a reason, never both.
    placed = set().union(*ids.values())
    assert placed | set(split.excluded) == set(records)
    assert not placed & set(split.excluded)


def test_known_near_duplicates_are_grouped_or_excluded():
    fin = roles.bundled_split("finance")
    # reuters/352 repeats a training story (the old xfail): excluded from every role.
    assert "reuters/352" in fin.excluded
    group = next(g for g in fin.groups if "gnucash/ch_capgain/s03" in g)
    placed = [r for r in roles.ROLES if set(group) & set(fin.ids(r))]
    assert len(placed) == 1  # the whole group sits in one role


def test_split_is_deterministic_balanced_and_mixes_sources():
    a = roles.split_roles(load_records("general_heldout"), corpus="g")
    b = roles.split_roles(list(reversed(load_records("general_heldout"))), corpus="g")
    assert {r: set(v) for r, v in a.roles.items()} == {r: set(v) for r, v in b.roles.items()}
    records = {r["id"]: r for r in load_records("general_heldout")}
    chars = {r: sum(len(records[i]["text"]) for i in a.ids(r)) for r in roles.ROLES}
    assert max(chars.values()) < 1.5 * min(chars.values())
    for role in roles.ROLES:
        assert {records[i]["source"] for i in a.ids(role)} == {"austen", "wordnet"}


def test_a_users_corpus_gets_roles_and_overlap_with_training_is_excluded():
    rng = random.Random(0)
    words = [f"w{k}" for k in range(500)]
    docs = [{"id": f"d{i}", "text": " ".join(rng.choices(words, k=60))} for i in range(30)]
    docs.append({"id": "copy", "text": docs[3]["text"] + " and one more sentence at the end."})
    train = roles.train_shingles(["only training prose, nothing shared " * 4, docs[5]["text"]])
    split = roles.split_roles(docs, train, corpus="mine")
    assert "d5" in split.excluded
    role_of = {i: r for r in roles.ROLES for i in split.ids(r)}
    assert role_of["copy"] == role_of["d3"]  # a near-duplicate follows its original
    assert all(split.ids(r) for r in roles.ROLES)
    assert split.record()["roles"]["test"] == list(split.ids("test"))


def test_bad_role_and_duplicate_ids_are_user_errors():
    with pytest.raises(UserError, match="text role 'train'"):
        roles.check_role("train")
    with pytest.raises(UserError, match="repeats"):
        roles.split_roles([{"id": "a", "text": "x" * 50}, {"id": "a", "text": "y" * 50}])


def test_shingle_hashes_match_string_shingles():
    text = "Hello   World, this is\na text that is long enough to have several shingles in it."
    assert len(roles.shingle_hashes(text)) == len(_shingles(text))
    assert len(roles.shingle_hashes("short")) == 1 and len(roles.shingle_hashes("  ")) == 0
