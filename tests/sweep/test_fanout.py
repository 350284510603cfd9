"""Sweep points fanned out over Hydra's joblib launcher (2 workers) against the one-process sweep:
the same points, scores, frontier, verdict and solver (docs/sweeps.md, "Fanning out")."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from spear_mm.errors import UserError


def run_cli(*args):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "spear_mm.cli.main", "sweep", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)


def _without_timings(doc: dict) -> dict:
    doc = {k: v for k, v in doc.items() if k != "timings"}
    doc["points"] = [{k: v for k, v in p.items() if k != "timings"} for p in doc["points"]]
    return doc


@pytest.fixture(scope="module")
def sweeps(tiny_pair, tmp_path_factory):
    """(one-process out, fanned-out out, common args). The pair is swapped so that the 'adapted'
    model forgets and the recovered target needs the finish step's bisection."""
    base, adapted = tiny_pair
    root = tmp_path_factory.mktemp("fanout")
    common = [f"base={adapted}", f"adapted={base}", "probe.max_tokens=128", "plot=false",
              "families=[uniform,depth]", "target_recovered=0.5", "threads=1"]  # fmt: skip
    one, fan = root / "one", root / "fan"
    res = run_cli(*common, f"out={one}")
    assert res.returncode == 0, res.stderr[-2000:]
    res = run_cli("-m", *common, f"out={fan}", "workers=2", "worker=0,1",
                  "hydra/launcher=joblib", "hydra.launcher.n_jobs=2")  # fmt: skip
    assert res.returncode == 0, res.stderr[-2000:]
    return one, fan, common


def test_joblib_fanout_gives_the_one_process_sweep(sweeps):
    one, fan, _ = sweeps
    want = json.loads((one / "sweep.json").read_text())
    got = json.loads((fan / "sweep.json").read_text())
    assert _without_timings(got) == _without_timings(want)
    assert any(p["role"] == "refined" for p in got["points"])  # refinement ran in the finish step
    assert (fan / "selected_recipe.yaml").read_text() == (one / "selected_recipe.yaml").read_text()
    recipes = sorted(p.name for p in (one / "recipes").iterdir())
    assert sorted(p.name for p in (fan / "recipes").iterdir()) == recipes
    for name in recipes:
        assert (fan / "recipes" / name).read_text() == (one / "recipes" / name).read_text()
    shards = [json.loads((fan / f"worker-{k}" / "shard.json").read_text()) for k in (0, 1)]
    grid = [p for p in want["points"] if p["role"] != "refined"]
    assert sorted(r["index"] for s in shards for r in s["rows"]) == list(range(len(grid)))
    assert {len(s["rows"]) for s in shards} == {len(grid) // 2}  # each worker its half


def test_finish_by_hand_and_a_missing_shard(sweeps, tmp_path):
    _, fan, common = sweeps
    copy = tmp_path / "fan"
    shutil.copytree(fan, copy)
    (copy / "sweep.json").unlink()
    res = run_cli(*common, f"out={copy}", "workers=2", "finish=true")
    assert res.returncode == 0, res.stderr[-2000:]
    want = json.loads((fan / "sweep.json").read_text())
    assert _without_timings(json.loads((copy / "sweep.json").read_text())) == _without_timings(want)
    shutil.rmtree(copy / "worker-1")
    res = run_cli(*common, f"out={copy}", "workers=2", "finish=true")
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "worker(s) [1]" in lines[-1], res.stderr[-2000:]
    # The missing worker re-run alone (Hydra's job 0, basic launcher) lands beside worker 0's
    # shard, not over it, and assembles the sweep again.
    (copy / "sweep.json").unlink()
    res = run_cli("-m", *common, f"out={copy}", "workers=2", "worker=1")
    assert res.returncode == 0, res.stderr[-2000:]
    assert _without_timings(json.loads((copy / "sweep.json").read_text())) == _without_timings(want)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["workers=2"], "without worker="),
        (["workers=2", "worker=2"], "0..workers-1"),
        (["workers=0"], "must be >= 1"),
        (["finish=true"], "finish=true"),
    ],
)
def test_fanout_keys_are_checked(sweep_cfg, overrides, message):
    with pytest.raises(UserError, match=message):
        sweep_cfg(*overrides)


def test_sweep_and_compare_take_the_lm_eval_keys(sweep_cfg):
    # Composed through conf/sweep.yaml and the schema, as the CLI does (docs/eval.md).
    cfg = sweep_cfg("lm_eval.mode=accelerate", "lm_eval.num_processes=8",
                    "+lm_eval.model_args.max_batch_size=32", "device=auto")  # fmt: skip
    assert (cfg.lm_eval.mode, cfg.lm_eval.num_processes) == ("accelerate", 8)
    assert cfg.lm_eval.model_args["max_batch_size"] == 32
    from spear_mm.pipeline.config import CompareConfig
    from spear_mm.sweep.evaluate import sweep_device

    assert sweep_device(cfg) == "cpu"  # auto without a GPU
    assert CompareConfig().lm_eval.mode == "hf"  # the in-memory path stays the default
