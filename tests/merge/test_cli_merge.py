"""`spear-mm merge` as a subprocess: success, --force, bad recipes (exit 2, one line, no output)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

SPEAR = str(Path(sys.executable).with_name("spear-mm"))


def cli(*args, timeout=180):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    return subprocess.run(
        [SPEAR, "merge", *map(str, args)], capture_output=True, text=True, env=env, timeout=timeout
    )


def test_merge_native_recipe_then_force(tmp_path, mh, pair):
    recipe = mh.write_recipe(
        tmp_path / "r.yaml", {"base": str(pair[0]), "adapted": str(pair[1]), "default": "freeze"}
    )
    out = tmp_path / "merged"
    proc = cli(recipe, "--out", out, "--threads", "2", "--shard-size", "200KB")
    assert proc.returncode == 0, proc.stderr
    assert "merged" in proc.stderr and "copy" in proc.stderr
    base = mh.load_weights(pair[0])
    for name, tensor in mh.load_weights(out).items():
        assert torch.equal(tensor, base[name])
    report = json.loads((out / "merge_report.json").read_text())
    assert report["summary"]["paths"] == {"copy": len(base)}

    again = cli(recipe, "--out", out)
    assert again.returncode == 2 and "--force" in again.stderr
    first = {p.name: p.read_bytes() for p in out.glob("*.safetensors")}
    again = cli(
        recipe, "--out", out, "--force", "--quiet", "--buffered-io", "--shard-size", "200KB"
    )
    assert again.returncode == 0, again.stderr
    assert {p.name: p.read_bytes() for p in out.glob("*.safetensors")} == first


def test_bad_recipe_exit_2_one_line_nothing_written(tmp_path, mh, pair):
    recipe = mh.write_recipe(
        tmp_path / "bad.yaml",
        {"base": str(pair[0]), "adapted": str(pair[1]), "rules": [{"kinds": "mlp", "t": 2}]},
    )
    proc = cli(recipe, "--out", tmp_path / "merged")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "rules[0].t" in lines[0] and str(recipe) in lines[0]
    assert not (tmp_path / "merged").exists()


def test_usage_errors(tmp_path):
    proc = cli(tmp_path / "missing.yaml", "--out", tmp_path / "o")
    assert proc.returncode == 2 and "does not exist" in proc.stderr
    proc = cli(tmp_path / "missing.yaml")
    assert proc.returncode == 2 and "--out" in proc.stderr
    proc = cli(tmp_path / "r.yaml", "--out", tmp_path / "o", "--device", "tpu")
    assert proc.returncode == 2
