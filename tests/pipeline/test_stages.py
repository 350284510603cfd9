"""Stage cache: reuse on the same key, recompute on a changed key, resume in place."""

from __future__ import annotations

import json

import numpy as np
import pytest

from spear_mm.analyze.document import SCHEMA_VERSION, AnalysisDoc
from spear_mm.pipeline.stages import Stage, run_stage, stage_key


class _Killed(Exception):
    pass


def _stage(name, payload, calls, resumable=False):
    def run(folder):
        calls.append(name)
        (folder / "out.txt").write_text(json.dumps(payload))
        return {"value": payload.get("x")}

    return Stage(name, payload, run, resumable=resumable)


def test_reuse_and_recompute(tmp_path):
    calls, logs = [], []
    first = run_stage(tmp_path, _stage("a", {"x": 1}, calls), logs.append)
    again = run_stage(tmp_path, _stage("a", {"x": 1}, calls), logs.append)
    assert calls == ["a"] and again["key"] == first["key"]
    assert any("cached" in line for line in logs)
    changed = run_stage(tmp_path, _stage("a", {"x": 2}, calls), logs.append)
    assert calls == ["a", "a"] and changed["summary"] == {"value": 2}
    assert json.loads((tmp_path / "a" / "out.txt").read_text()) == {"x": 2}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a"]


def test_key_is_order_independent():
    assert stage_key({"a": 1, "b": [1, 2]}) == stage_key({"b": [1, 2], "a": 1})
    assert stage_key({"a": 1}) != stage_key({"a": 2})


def test_resumable_stage_reenters_same_folder(tmp_path):
    seen = []

    def run(folder):
        seen.append(sorted(p.name for p in folder.iterdir()))
        if not (folder / "partial").exists():
            (folder / "partial").write_text("half")
            raise _Killed  # a kill mid-stage
        return {"done": True}

    stage = Stage("train", {"lr": 1}, run, resumable=True)
    with pytest.raises(_Killed):
        run_stage(tmp_path, stage, lambda _: None)
    marker = run_stage(tmp_path, Stage("train", {"lr": 1}, run, resumable=True), lambda _: None)
    assert marker["summary"] == {"done": True}
    assert "partial" in seen[1]  # resumed with what the killed run left
    with pytest.raises(_Killed):
        run_stage(tmp_path, Stage("train", {"lr": 2}, run, resumable=True), lambda _: None)
    assert seen[2] == ["stage_key.txt"]  # changed inputs: started over


def test_analyze_key_follows_the_content_of_named_files(tmp_path, monkeypatch):
    """score_spec= / prior= files are keyed by content: editing one in place recomputes."""
    from spear_mm.pipeline.config import RunConfig
    from spear_mm.pipeline.study import analyze_stage

    spec = tmp_path / "spec.json"
    spec.write_text('{"weights": {"depth": 1.0}}')
    cfg = RunConfig()
    cfg.analyze.score_spec = str(spec)
    first = analyze_stage(cfg, tmp_path, tmp_path, "up").key
    assert analyze_stage(cfg, tmp_path, tmp_path, "up").key == first
    spec.write_text('{"weights": {"depth": 0.5}}')
    assert analyze_stage(cfg, tmp_path, tmp_path, "up").key != first
    plain = RunConfig()
    assert "files" not in analyze_stage(plain, tmp_path, tmp_path, "up").payload
    from spear_mm.analyze import validate

    default_key = analyze_stage(plain, tmp_path, tmp_path, "up").key
    monkeypatch.setattr(validate, "DEFAULT_WEIGHTS", {"depth": 1.0})
    assert analyze_stage(plain, tmp_path, tmp_path, "up").key != default_key


def _analysis(harm_scale: float, seed: int = 0, layers: int = 8, docs: int = 40) -> AnalysisDoc:
    """A synthetic analysis.json: per-document NLL of adapted, base and each layer restore.

    Layer i's restore lowers every document's NLL by harm_scale * i * bytes (plus noise), so
    the true harm ranking is the layer index; the combined score is that index, depth its
    reverse (earliest first ranks the least harmful layer first here)."""
    rng = np.random.default_rng(seed)
    nbytes = rng.integers(200, 400, size=docs).astype(float)
    adapted = rng.uniform(0.8, 1.2, size=docs) * nbytes
    per_layer = [
        {"general": list(adapted - harm_scale * i * nbytes + rng.normal(0, 3.0, size=docs))}
        for i in range(layers)
    ]
    per_doc = {
        "adapted": {"general": list(adapted)},
        "base": {"general": list(adapted)},
        "per_layer": per_layer,
        "probes": {"general": {"bytes": list(nbytes), "max_tokens": 2048}},
    }
    return _doc(
        validation={"rho_combined": 1.0, "rho_depth": -1.0, "rho_signals": {}},
        ablation={"per_doc": per_doc},
        combined_score=[float(i) for i in range(layers)],
        layers=[{"depth": float(layers - i)} for i in range(layers)],
    )


def _doc(**fields) -> AnalysisDoc:
    """An analysis document as its reader returns it."""
    ranking = list(range(len(fields.get("layers") or [])))
    return AnalysisDoc(schema_version=SCHEMA_VERSION, layer_ranking=ranking, **fields)


def test_analyzer_verdict_comes_from_the_rho_interval():
    from spear_mm.pipeline.findings import analyzer_findings, rho_evidence

    clear = rho_evidence(_analysis(harm_scale=0.01))
    assert clear["call"] == "beats depth"
    assert clear["difference"].lo > 0 and clear["rho_combined"].value > 0.9
    assert clear["rho_combined"].resamples == 2000
    lines, table = analyzer_findings(_analysis(harm_scale=0.01))
    assert "beats depth" in lines[0] and "[" in lines[0]
    assert table[0]["interval"]["lo"] is not None
    # Harm far inside the per-document noise: the same ranking is no evidence either way.
    noisy = rho_evidence(_analysis(harm_scale=1e-5))
    assert noisy["call"] == "no evidence either way"
    assert noisy["difference"].lo < 0 < noisy["difference"].hi
    # Deterministic: the same records and seed give the same interval, bit for bit.
    assert rho_evidence(_analysis(harm_scale=1e-5)) == noisy


def test_analyzer_without_records_states_no_verdict():
    from spear_mm.pipeline.findings import analyzer_findings

    val = {"rho_combined": 0.21, "rho_depth": 0.16, "rho_signals": {}}
    lines, _ = analyzer_findings(_doc(validation=val, ablation={"probe": {"max_tokens": 2048}}))
    assert "no verdict" in lines[0] and "beats" not in lines[0]


def _ratio(value, lo, hi):
    return {"measurable": True, "interval": {"value": value, "lo": lo, "hi": hi}}


def test_paper_finding_states_what_each_accuracy_column_allows():
    from spear_mm.pipeline.findings import paper_finding

    rec, gain = _ratio(0.8, 0.75, 0.9), _ratio(0.97, 0.95, 1.0)
    both = paper_finding({"ci": {"general_mc_recovered": rec, "finance_mc_gain_kept": gain}})
    assert both.endswith("both intervals lie at or above the paper's headline.")
    general_only = paper_finding({"ci": {"general_mc_recovered": rec}})
    assert "forgetting recovered is 80.0% [75.0, 90.0]" in general_only
    assert "compare.finance_tasks is empty" in general_only
    assert "cannot be checked" in general_only
    assert paper_finding({"ci": {}}).endswith("(compare.mc_limit=0).")
