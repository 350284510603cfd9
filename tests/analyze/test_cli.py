"""`spear-mm analyze` as a subprocess: all outputs for a tiny pair, bad input → exit 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import yaml

from spear_mm.analyze import crosscheck
from spear_mm.analyze.validate import ScoreSpec, combined_score, spearman


def _run(args, tmp_path):
    env = dict(
        os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", HF_HOME=str(tmp_path / "hf")
    )
    return subprocess.run(
        [sys.executable, "-m", "spear_mm.cli.main", "analyze", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


def test_cli_writes_every_output(tmp_path, tiny_pair):
    base, adapted = tiny_pair
    out = tmp_path / "out"
    proc = _run(
        [
            f"base={base}",
            f"adapted={adapted}",
            f"out={out}",
            "ablation=true",
            "fit=true",
            "probe.max_tokens=128",
            "probe.seq_len=64",
            "select_k=[1,2]",
        ],
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    for name in (
        "analysis.json",
        "layer_impact.png",
        "score_spec.json",
        "config.yaml",
        "run_info.json",
    ):
        assert (out / name).is_file(), name
    for policy in ("conservative", "balanced", "aggressive"):
        assert yaml.safe_load((out / "recipes" / f"{policy}.yaml").read_text())["rules"]
        assert "layers" in yaml.safe_load((out / "freeze" / f"{policy}.yaml").read_text())
    doc = json.loads((out / "analysis.json").read_text())
    assert sorted(doc["layer_ranking"]) == [0, 1, 2, 3]
    assert doc["inputs"]["base_fingerprint"] and doc["versions"]["torch"]
    harm = doc["ablation"]["harm"]["general"]
    val = doc["validation"]
    assert val["rho_combined"] == spearman(doc["combined_score"], harm)
    assert val["rho_depth"] == spearman([3.0, 2.0, 1.0, 0.0], harm)
    assert set(val["selection"]["2"]) == {"score", "ablation", "depth"}
    assert doc["ablation"]["probe"]["max_tokens"] == 128  # the report warns on small probes
    assert doc["fitted_spec"]["notes"] and doc["timing"]["cost_ratio_weight_over_ablation"] > 0
    assert (out / "layer_impact.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the fitted spec is reusable on another study
    out2 = tmp_path / "out2"
    proc = _run(
        [
            f"base={base}",
            f"adapted={adapted}",
            f"out={out2}",
            f"score_spec={out / 'score_spec.json'}",
            "plot=false",
        ],
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    doc2 = json.loads((out2 / "analysis.json").read_text())
    assert doc2["score_spec"]["weights"] == doc["fitted_spec"]["weights"]
    assert doc2["ablation"] is None and not (out2 / "layer_impact.png").exists()
    # crosscheck: the study's own fitted spec is reported as in-sample, with its real rho
    table = "\n".join(crosscheck.rows([str(out / "analysis.json")]))
    fitted = ScoreSpec(**doc["fitted_spec"])
    rho = spearman(combined_score(doc["layers"], fitted), harm)
    assert f"| yes | {rho:+.3f} |" in table


def test_cli_bad_input_exit_2(tmp_path, tiny_base):
    proc = _run(
        [f"base={tiny_base}", f"adapted={tmp_path / 'nope'}", f"out={tmp_path / 'o'}"], tmp_path
    )
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    proc = _run(
        [f"base={tiny_base}", f"adapted={tiny_base}", f"out={tmp_path / 'o2'}", "svd_mode=bogus"],
        tmp_path,
    )
    assert proc.returncode == 2 and "svd_mode" in proc.stderr


def test_cli_reference_ablation_prior(tmp_path, tiny_pair):
    """prior=: another study's measured harm becomes a validated feature and a selection."""
    base, adapted = tiny_pair
    common = ["ablation=true", "probe.max_tokens=128", "probe.seq_len=64", "select_k=[2]"]
    first, second = tmp_path / "first", tmp_path / "second"
    proc = _run([f"base={base}", f"adapted={adapted}", f"out={first}", *common], tmp_path)
    assert proc.returncode == 0, proc.stderr
    spec = tmp_path / "prior_spec.json"
    spec.write_text(json.dumps({"weights": {"prior": 1.0}}))
    args = [f"base={base}", f"adapted={adapted}", f"out={second}", f"prior={first}/analysis.json"]
    proc = _run([*args, f"score_spec={spec}", "plot=false", *common], tmp_path)
    assert proc.returncode == 0, proc.stderr
    ref = json.loads((first / "analysis.json").read_text())["ablation"]["harm"]["general"]
    doc = json.loads((second / "analysis.json").read_text())
    harm = doc["ablation"]["harm"]["general"]
    assert [row["prior"] for row in doc["layers"]] == ref
    assert doc["validation"]["rho_prior"] == spearman(ref, harm)
    assert doc["validation"]["rho_combined"] == doc["validation"]["rho_prior"]
    assert set(doc["validation"]["selection"]["2"]) == {"score", "ablation", "depth", "prior"}
    # a prior without an ablation is refused in one line
    no_abl = tmp_path / "no_abl.json"
    no_abl.write_text(json.dumps({"ablation": None}))
    proc = _run(
        [f"base={base}", f"adapted={adapted}", f"out={tmp_path / 'x'}", f"prior={no_abl}"], tmp_path
    )
    assert proc.returncode == 2 and "prior=" in proc.stderr and proc.stderr.count("\n") == 1
    assert not (tmp_path / "x").exists()


def test_cli_ablation_without_general_probe_is_one_line(tmp_path, tiny_pair):
    """ablation/fit/selection rank by the general probe: without it, exit 2 naming the key."""
    base, adapted = tiny_pair
    out = tmp_path / "o"
    args = [f"base={base}", f"adapted={adapted}", f"out={out}", "ablation=true", "fit=true"]
    proc = _run([*args, "probe.names=[finance]"], tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert "KeyError" not in proc.stderr and "probe.names" in proc.stderr
    assert "probe.names=[general,finance]" in proc.stderr  # the fix
    assert not out.exists()
