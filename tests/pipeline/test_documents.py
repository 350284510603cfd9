"""Typed stage documents: one reader each (schema version checked), findings by row id."""

from __future__ import annotations

import json

import pytest

from spear_mm.analyze.document import read_analysis
from spear_mm.errors import UserError
from spear_mm.pipeline import document as compare_doc
from spear_mm.pipeline.config import RunConfig
from spear_mm.pipeline.document import read_compare
from spear_mm.pipeline.findings import build_report
from spear_mm.sweep import document as sweep_doc
from spear_mm.sweep.document import read_sweep

RATIO = {"measurable": True, "interval": {"value": 0.5, "lo": 0.4, "hi": 0.6}}


def _row(row_id: str, label: str, general: float, finance: float) -> dict:
    ci = {"gain_kept": RATIO, "forgetting_recovered": RATIO}
    return {"id": row_id, "model": label, "general_bpb": general, "finance_bpb": finance, "ci": ci}


def _study(run_dir, labels: dict[str, str]) -> None:
    """A finished study's three documents (only the fields the report reads)."""
    rows = [
        _row("base", labels["base"], 1.0, 1.2),
        _row("adapted", labels["adapted"], 1.1, 1.0),
        _row("selected", labels["selected"], 1.05, 1.05),
        _row("uniform", labels["uniform"], 1.06, 1.06),
    ]
    rows[2]["vs_uniform"] = {"call": "better"}
    docs = {
        "compare/compare.json": {
            "schema_version": compare_doc.SCHEMA_VERSION, "text_role": "test", "rows": rows,
            "probe": {"max_tokens": 256}, "bootstrap": {"resamples": 2000},
        },
        "sweep/sweep.json": {
            "schema_version": sweep_doc.SCHEMA_VERSION,
            "points": [{"family": "depth", "label": "depth@0.3"}],
            "solver": {"metric": "recovered", "target": 0.5, "selected": "depth@0.3",
                       "message": "depth@0.3 meets the target"},
            "verdict": {"summary": "depth beats uniform"},
            "notes": ["a note"],
        },
        "analyze/analysis.json": {"schema_version": 1, "layer_ranking": [1, 0]},
    }  # fmt: skip
    for name, doc in docs.items():
        (run_dir / name).parent.mkdir(parents=True, exist_ok=True)
        (run_dir / name).write_text(json.dumps(doc))


LABELS = {
    "base": "base",
    "adapted": "plain CPT (adapted)",
    "selected": "selected (depth@0.3)",
    "uniform": "uniform baseline (knob 0.3)",
}


def test_renaming_a_row_label_drops_no_finding(tmp_path):
    _study(tmp_path / "a", LABELS)
    renamed = {k: f"Row {i}: {k.upper()}" for i, k in enumerate(LABELS)}
    _study(tmp_path / "b", renamed)
    before = build_report(RunConfig(), tmp_path / "a", [], 1.0).findings
    after = build_report(RunConfig(), tmp_path / "b", [], 1.0).findings
    assert len(after) == len(before)
    assert before[0].startswith("Plain CPT moved") and after[0].startswith("Plain CPT moved")
    uniform = [f for f in after if f.startswith("Against the best uniform")]
    assert uniform and "Row 3: UNIFORM" in uniform[0] and "beats uniform" in uniform[0]
    for old, new in zip(before, after, strict=True):  # only the labels differ
        for key in sorted(LABELS, key=lambda k: -len(LABELS[k])):  # "base" is in "baseline"
            old = old.replace(LABELS[key], renamed[key])
        assert old == new


@pytest.mark.parametrize(
    "read, name, version",
    [
        (read_analysis, "analysis.json", 1),
        (read_sweep, "sweep.json", sweep_doc.SCHEMA_VERSION),
        (read_compare, "compare.json", compare_doc.SCHEMA_VERSION),
    ],
)
def test_every_reader_checks_the_version(tmp_path, read, name, version):
    path = tmp_path / name
    for body, found in (({}, "no schema_version"), ({"schema_version": version + 1}, "99")):
        path.write_text(json.dumps(body))
        with pytest.raises(UserError) as err:
            read(path)
        msg = str(err.value)
        assert str(path) in msg and f"expected schema_version {version}" in msg
        assert (found in msg) if found != "99" else f"schema_version {version + 1}" in msg
    path.write_text(json.dumps({"schema_version": version}))  # right version, fields missing
    with pytest.raises(UserError, match="Field required"):
        read(path)


def test_compare_rows_need_ids(tmp_path):
    path = tmp_path / "compare.json"
    doc = {"schema_version": 1, "text_role": "test", "rows": [{"model": "base"}]}
    path.write_text(json.dumps(doc))
    with pytest.raises(UserError, match="row 0 needs a string 'id'"):
        read_compare(path)
    doc["rows"][0]["id"] = "base"
    path.write_text(json.dumps(doc))
    assert read_compare(path).row("base")["model"] == "base"
    assert read_compare(path).row("uniform") is None


def test_a_new_document_version_recomputes_its_stage(monkeypatch, tmp_path):
    """A cached sweep / compare folder of an older layout is never handed to the new reader."""
    from spear_mm.pipeline import study

    cfg, up = RunConfig(), ["upstream-key"]
    sweep = study.sweep_stage(cfg, tmp_path, tmp_path, tmp_path, up).key
    compare = study.compare_stage(cfg, tmp_path, tmp_path, tmp_path, up).key
    monkeypatch.setattr(study, "SWEEP_DOC", sweep_doc.SCHEMA_VERSION + 1)
    monkeypatch.setattr(study, "COMPARE_DOC", compare_doc.SCHEMA_VERSION + 1)
    assert study.sweep_stage(cfg, tmp_path, tmp_path, tmp_path, up).key != sweep
    assert study.compare_stage(cfg, tmp_path, tmp_path, tmp_path, up).key != compare
