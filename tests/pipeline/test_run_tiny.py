"""End to end: `spear-mm run experiment=tiny` as a subprocess, then a cached re-run."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest


def _run(out, home, *extra):
    env = {
        **os.environ,
        "SPEAR_MM_HOME": str(home),
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
    }
    return subprocess.run(
        [sys.executable, "-m", "spear_mm.cli.main", "run", "experiment=tiny", f"out={out}", *extra],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )


@pytest.mark.slow
def test_tiny_study_end_to_end_and_cached_rerun(tmp_path):
    out, home = tmp_path / "study", tmp_path / "home"
    first = _run(out, home, "replay=[0.25]")
    assert first.returncode == 0, first.stderr[-2000:]
    for path in (
        "report.md",
        "report.html",
        "config.yaml",
        "run_info.json",
        "train/final/config.json",
        "analyze/analysis.json",
        "analyze/layer_impact.png",
        "sweep/sweep.json",
        "sweep/frontier.png",
        "sweep/selected_recipe.yaml",
        "sweep/merged/config.json",
        "compare/compare.json",
        "compare/tradeoff.png",
        "replay_25/final/config.json",
    ):
        assert (out / path).is_file(), path
    rows = json.loads((out / "compare/compare.json").read_text())["rows"]
    labels = [r["model"] for r in rows]
    assert labels[:2] == ["base", "plain CPT (adapted)"]
    assert any(label.startswith("SPEAR-MM balanced") for label in labels)
    from spear_mm.analyze.document import read_analysis
    from spear_mm.pipeline.document import read_compare
    from spear_mm.sweep.document import read_sweep

    table = read_compare(out / "compare/compare.json")  # each document through its one reader
    ids = [r["id"] for r in table.rows]
    assert ids[:6] == ["base", "adapted", "replay_25", "conservative", "balanced", "aggressive"]
    replay = table.row("replay_25")
    assert replay["model"] == "CPT + 25% general replay" and replay["checkpoint"]
    assert replay["general_bpb"] != table.row("adapted")["general_bpb"]  # a CPT of its own
    assert replay["ci"]["gain_kept"]["denominator"]  # a ratio record against base / plain CPT
    replay_stage = json.loads((out / "replay_25" / "stage.json").read_text())
    assert replay_stage["payload"]["data"]["replay_ratio"] == 0.25
    assert table.row("selected") is not None  # (no uniform row: none meets the tiny target)
    assert read_sweep(out / "sweep/sweep.json").solver["selected"]
    assert sorted(read_analysis(out / "analyze/analysis.json").layer_ranking) == [0, 1, 2, 3]
    assert all(r["general_mc"] is not None for r in rows)
    compare = json.loads((out / "compare/compare.json").read_text())
    assert compare["text_role"] == "test" and compare["bootstrap"]["resamples"] == 2000
    test_ids = set(compare["roles"]["finance"]["roles"]["test"])
    assert set(compare["probes"]["finance"]["ids"]) <= test_ids
    assert all(
        r["ci"]["general_bpb"]["lo"] <= r["general_bpb"] <= r["ci"]["general_bpb"]["hi"]
        for r in rows
    )
    assert all(len(r["docs"]["finance"]) == len(compare["probes"]["finance"]["ids"]) for r in rows)
    sweep = json.loads((out / "sweep/sweep.json").read_text())
    assert sweep["text_role"] == "selection"
    assert not set(sweep["probes"]["finance"]["ids"]) & test_ids
    analysis = json.loads((out / "analyze/analysis.json").read_text())
    calib = analysis["ablation"]["per_doc"]["probes"]["finance"]
    assert calib["role"] == "calibration" and not set(calib["ids"]) & test_ids
    fam = compare["families"]  # each family's selection-chosen point vs uniform, on test text
    chosen = {f for f, v in sweep["verdict"]["families"].items() if v.get("best_knob") is not None}
    assert fam["text_role"] == "test" and fam["chosen_on"] == "selection"
    assert chosen and set(fam["families"]) == chosen
    for v in fam["families"].values():
        iv = v["best_advantage_interval"]
        assert iv["lo"] <= v["best_advantage"] <= iv["hi"] and iv["resamples"] == 2000
        assert v["call"] in ("beats", "loses", "no evidence either way")
    report = (out / "report.md").read_text()
    assert "Families vs uniform on test-role text" in report
    assert "## Findings" in report and "depth baseline" in report
    assert "- Gate " in report and "CPT + 25% general replay" in report
    assert "Test-role documents only" in report and "95%" in report
    assert "meets the paper" not in report and "different metric" in report
    html = (out / "report.html").read_text()
    assert "data:image/png;base64," in html

    again = _run(out, home, "replay=[0.25]")
    assert again.returncode == 0, again.stderr[-2000:]
    for stage in ("train", "analyze", "sweep", "replay_25", "compare"):
        assert f"[{stage}] cached" in again.stdout
    assert json.loads((out / "compare/compare.json").read_text())["rows"] == rows

    changed = _run(out, home, "sweep.target_recovered=0.3", "replay=[0.25]")
    assert changed.returncode == 0, changed.stderr[-2000:]
    assert "[train] cached" in changed.stdout and "[analyze] cached" in changed.stdout
    assert "[sweep] running" in changed.stdout


@pytest.mark.slow
def test_tiny_study_over_two_seeds_writes_a_cross_seed_summary(tmp_path):
    out, home = tmp_path / "seeds", tmp_path / "home"
    res = _run(out, home, "seeds=[0,1]", "replay=[0.1]", "replay_seeds=[0]")
    assert res.returncode == 0, res.stderr[-2000:]
    summary = json.loads((out / "seeds_summary.json").read_text())
    assert [r["seed"] for r in summary["seeds"]] == [0, 1]
    assert (out / "seed_0" / "replay_10").is_dir() and not (out / "seed_1" / "replay_10").exists()
    key = "CPT + 10% general replay: general_mc"
    assert summary["seeds"][0]["numbers"][key]["value"] is not None
    assert key not in summary["seeds"][1]["numbers"] and summary["across_seeds"][key]["n"] == 1
    assert all(r["gate"]["regime"] for r in summary["seeds"])
    for r in summary["seeds"]:
        assert (out / f"seed_{r['seed']}" / "report.md").is_file()
        assert r["sweep_verdict"] and r["test_verdict"]
    fam_key = "depth family: gain kept − uniform's at equal general score"
    assert all(r["numbers"][fam_key]["interval"]["lo"] is not None for r in summary["seeds"])
    assert summary["across_seeds"][fam_key]["n"] == 2
    assert "families vs uniform (test-role text)" in (out / "seeds_summary.md").read_text()
    cpt = summary["across_seeds"]["plain CPT (adapted): general_bpb"]
    values = [r["numbers"]["plain CPT (adapted): general_bpb"]["value"] for r in summary["seeds"]]
    assert values[0] != values[1]  # two CPT seeds, two adapted models
    assert cpt["mean"] == pytest.approx(sum(values) / 2) and cpt["n"] == 2
    md = (out / "seeds_summary.md").read_text()
    assert "seed 1" in md
    assert "; selected (" in md and "selected selected" not in md  # the row's own label


def test_bad_override_is_one_line_exit_2(tmp_path):
    res = _run(tmp_path / "x", tmp_path / "home", "sweep.base=/somewhere")
    assert res.returncode == 2
    assert res.stderr.count("\n") == 1 and "sweep.base" in res.stderr
    assert not (tmp_path / "x").exists()
