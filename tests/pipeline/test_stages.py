"""Stage cache: reuse on the same key, recompute on a changed key, resume in place."""

from __future__ import annotations

import json

import pytest

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
    from omegaconf import OmegaConf

    from spear_mm.pipeline.study import analyze_stage

    spec = tmp_path / "spec.json"
    spec.write_text('{"weights": {"depth": 1.0}}')
    cfg = OmegaConf.create({"analyze": {"score_spec": str(spec), "prior": None}})
    first = analyze_stage(cfg, tmp_path, tmp_path, "up").key
    assert analyze_stage(cfg, tmp_path, tmp_path, "up").key == first
    spec.write_text('{"weights": {"depth": 0.5}}')
    assert analyze_stage(cfg, tmp_path, tmp_path, "up").key != first
    plain = OmegaConf.create({"analyze": {"score_spec": None, "prior": None}})
    assert "files" not in analyze_stage(plain, tmp_path, tmp_path, "up").payload
    from spear_mm.analyze import validate

    default_key = analyze_stage(plain, tmp_path, tmp_path, "up").key
    monkeypatch.setattr(validate, "DEFAULT_WEIGHTS", {"depth": 1.0})
    assert analyze_stage(plain, tmp_path, tmp_path, "up").key != default_key


def test_findings_call_a_rho_inside_the_noise_a_tie_with_depth():
    from spear_mm.pipeline.findings import _versus_depth

    assert _versus_depth(0.664, 0.662).startswith("ties with depth")
    assert _versus_depth(0.80, 0.66) == "beats depth"
    assert _versus_depth(0.40, 0.66) == "does not beat depth"
    assert _versus_depth(None, 0.66) == "cannot be compared with depth"


def test_findings_warn_when_the_ablation_probes_are_small():
    from spear_mm.pipeline.findings import analyzer_findings

    val = {"rho_combined": 0.21, "rho_depth": 0.16, "rho_signals": {}}
    small = {"validation": val, "ablation": {"probe": {"max_tokens": 2048}}}
    lines, _ = analyzer_findings(small)
    assert any(line.startswith("Caution: the ablation used 2048-token probes") for line in lines)
    precise = {"validation": val, "ablation": {"probe": {"max_tokens": 8192}}}
    assert not any("Caution" in line for line in analyzer_findings(precise)[0])
    assert not any("Caution" in line for line in analyzer_findings({"validation": val})[0])
