"""A user's own held-out corpus (heldout.general / heldout.finance): read with ids, split into
the three roles automatically, training overlaps excluded, bad input one-line errors."""

from __future__ import annotations

import gzip
import json
import random

import pytest

from spear_mm.errors import UserError
from spear_mm.eval.config import HeldoutConfig
from spear_mm.eval.probe import Probe, probe_records, role_records
from spear_mm.io import roles
from spear_mm.io.textfiles import read_records


def _docs(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    words = [f"ledger{k}" for k in range(800)]
    return [" ".join(rng.choices(words, k=80)) for _ in range(n)]


def test_records_carry_ids_and_sources_from_files_and_folders(tmp_path):
    jl = tmp_path / "a.jsonl"
    jl.write_text('{"text": "one", "id": "x1"}\n\n{"text": "two", "source": "memo"}\n')
    assert read_records(jl, "k") == [
        {"text": "one", "id": "x1", "source": "a.jsonl"},
        {"text": "two", "id": "a.jsonl:3", "source": "memo"},
    ]
    folder = tmp_path / "f"
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "b.txt").write_text("bee")
    with gzip.open(folder / "c.json.gz", "wt") as fh:
        json.dump(["cee", {"text": "dee"}], fh)
    got = read_records(folder, "k")
    assert [(r["id"], r["source"]) for r in got] == [
        ("c.json.gz[0]", "c.json.gz"),
        ("c.json.gz[1]", "c.json.gz"),
        ("sub/b.txt", "sub/b.txt"),
    ]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"body": "x"}\n')
    with pytest.raises(UserError, match=r"k: .*bad.jsonl line 1 has no string field 'text'"):
        read_records(bad, "k")


def test_users_heldout_gets_three_disjoint_roles_and_training_text_is_excluded(tmp_path):
    texts = _docs(30)
    heldout = tmp_path / "mine.jsonl"
    heldout.write_text(
        "".join(json.dumps({"text": t, "id": f"m{i}"}) + "\n" for i, t in enumerate(texts))
    )
    train = tmp_path / "train"
    train.mkdir()
    (train / "leak.txt").write_text("Some training prose. " + texts[7][:200])
    cfg = HeldoutConfig(finance=str(heldout), exclude=[str(train)])
    by_role = {r: [d["id"] for d in probe_records("finance", r, cfg)] for r in roles.ROLES}
    assert all(by_role.values())
    seen = [i for ids in by_role.values() for i in ids]
    assert len(seen) == len(set(seen))  # disjoint
    assert "m7" not in seen  # shares a passage with the training folder
    record = role_records(cfg)["finance"]
    assert record["corpus"] == str(heldout) and "m7" in record["excluded"]
    assert {k: sorted(v) for k, v in record["roles"].items()} == {
        k: sorted(v) for k, v in by_role.items()
    }
    # deterministic, and the probe records the ids it reads
    again = roles.heldout_split(str(heldout), (str(train),))[1]
    assert again.record() == record
    probe = Probe.named("finance", role="test", heldout=cfg, max_tokens=64)
    assert set(probe.ids) == set(by_role["test"])
    # the general probe keeps the bundled corpus
    assert role_records(cfg)["general"] == role_records()["general"]


def test_heldout_bad_input_is_one_line(tmp_path):
    with pytest.raises(UserError, match=r"heldout.finance='/nope.jsonl': no such file"):
        probe_records("finance", "test", HeldoutConfig(finance="/nope.jsonl"))
    two = tmp_path / "two.jsonl"
    two.write_text("".join(json.dumps({"text": t}) + "\n" for t in _docs(2)))
    with pytest.raises(UserError, match=r"heldout.finance=.*empty role .*at least 3"):
        probe_records("finance", "test", HeldoutConfig(finance=str(two)))
    with pytest.raises(UserError, match="probe 'legal' is unknown"):
        HeldoutConfig().corpus("legal")
