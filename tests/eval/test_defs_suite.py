"""The bundled accuracy probe general_defs (scripts/build_defs_suite.py): counts, balance,
disjoint roles and no overlap with the text that models are trained on."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from spear_mm.eval import suites
from spear_mm.io.corpora import load_records

DATA = Path(suites.__file__).parent / "tasks" / "data"
ROLES = ("calibration", "selection", "test")


@pytest.fixture(scope="module")
def rows() -> dict[str, list[dict]]:
    return {
        role: [
            json.loads(x) for x in (DATA / f"general_defs_{role}.jsonl").read_text().splitlines()
        ]
        for role in ROLES
    }


def test_three_roles_of_300_with_their_tasks(rows):
    assert {r: len(v) for r, v in rows.items()} == dict.fromkeys(ROLES, 300)
    for role, items in rows.items():
        assert {x["role"] for x in items} == {role}
        assert f"spear_general_defs_{role}" in suites.bundled_tasks()
    assert suites.load_suite("general_defs")["tasks"] == ["spear_general_defs_test"]


def test_answers_balanced_and_choices_well_formed(rows):
    everything = [x for items in rows.values() for x in items]
    counts = Counter(x["answer"] for x in everything)
    assert set(counts) == {0, 1, 2, 3} and max(counts.values()) - min(counts.values()) <= 1
    for x in everything:
        assert len(set(x["choices"])) == 4
        assert not any(c in x["definition"].lower() for c in x["choices"])
    answers = [x["choices"][x["answer"]] for x in everything]
    assert len(set(answers)) == len(answers)  # no answer word twice, within or across roles


def test_roles_are_disjoint_and_unseen_in_training_text(rows):
    ids = [x["id"] for items in rows.values() for x in items]
    assert len(set(ids)) == len(ids)
    defs = {role: {x["definition"] for x in items} for role, items in rows.items()}
    for a in ROLES:
        for b in ROLES:
            if a < b:
                assert not defs[a] & defs[b]
    # 40-character shingles of every definition against the corpora a CPT or replay reads.
    train = " ".join(
        " ".join(rec["text"].split())
        for name in ("general_train", "finance_train", "general_heldout")
        for rec in load_records(name)
    )
    for items in rows.values():
        for x in items:
            d = x["definition"]
            if len(d) >= 40:
                assert all(d[i : i + 40] not in train for i in range(0, len(d) - 39, 10)), x["id"]
