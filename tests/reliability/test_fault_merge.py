"""Fault injection on `spear-mm merge`: SIGKILL at seeded random moments.

After every kill the target folder is either absent or complete (every tensor readable and equal
to an uninterrupted merge's); the next run (which uses --force, so it also exercises replacing a
complete target) sweeps the killed run's temp folder; after the last, uninterrupted run no temp
folder is left beside the target.
"""

from __future__ import annotations

import random
import shutil
import time

import torch
import yaml

from spear_mm.io.checkpoint import CheckpointReader

KILLS = 8
SEED = 1234


def _read_all(folder) -> dict[str, torch.Tensor]:
    with CheckpointReader(folder) as reader:
        return {n: reader.get(n).clone() for n in reader.names}


def _assert_complete(folder, reference: dict[str, torch.Tensor]) -> None:
    got = _read_all(folder)
    assert sorted(got) == sorted(reference)
    for name, tensor in reference.items():
        assert torch.equal(got[name], tensor), name
    assert (folder / "merge_report.json").is_file() and (folder / "config.json").is_file()


def test_merge_killed_at_random_moments_leaves_absent_or_complete(
    tmp_path, rel, cli_env, sharded_pair
):
    base, adapted = sharded_pair
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        yaml.safe_dump(
            {
                "base": str(base),
                "adapted": str(adapted),
                "default": 0.5,
                "rules": [{"kinds": "attention", "layers": "0-2", "t": [0.2, 0.8]}],
            }
        )
    )
    args = ("merge", recipe, "--shard-size", "1MB", "--quiet", "--force")
    ref_dir = tmp_path / "reference"
    proc = rel.start_cli(cli_env, *args, "--out", ref_dir)
    t0 = time.monotonic()
    assert rel.wait_for(lambda: any(tmp_path.glob(".reference.tmp-*")), proc, timeout=120)
    t_tmp = time.monotonic()
    assert rel.wait_for(ref_dir.exists, proc, timeout=120)
    duration, window = time.monotonic() - t0, time.monotonic() - t_tmp  # until the rename
    assert proc.wait(timeout=120) == 0
    rel.kill_cli(proc)
    print(f"uninterrupted merge: {duration:.2f} s, write window {window:.2f} s")
    reference = _read_all(ref_dir)
    assert len(list(ref_dir.glob("model-*.safetensors"))) > 5  # a multi-shard write

    rng = random.Random(SEED)
    out = tmp_path / "merged"
    outcomes, mid_write = [], 0
    for i in range(KILLS):
        if i % 4 < 2 and out.exists():
            shutil.rmtree(out)  # half the runs write a fresh target, half replace one
        proc = rel.start_cli(cli_env, *args, "--out", out)
        start = time.monotonic()
        if i % 2:  # aim at the write window: after the temp folder appears
            rel.wait_for(lambda: any(tmp_path.glob(".merged.tmp-*")), proc, timeout=60)
            time.sleep(rng.uniform(0.0, 0.9) * window)
        else:  # anywhere in the run, start-up included
            time.sleep(max(0.0, rng.uniform(0.3, 1.0) * duration - (time.monotonic() - start)))
        mid_write += bool(list(tmp_path.glob(".merged.tmp-*")))
        code = rel.kill_cli(proc)
        assert code in (None, 0), f"kill {i}: exit {code}"
        if out.exists():
            _assert_complete(out, reference)
            outcomes.append("complete" if code is None else "finished")
        else:
            outcomes.append("absent")
    print("outcomes after kills:", outcomes, "killed mid-write:", mid_write)
    assert mid_write >= 2 and "absent" in outcomes  # the kills did hit the interesting window

    final = rel.run_cli(cli_env, *args, "--out", out)
    assert final.returncode == 0, final.stderr
    _assert_complete(out, reference)
    assert rel.temp_leftovers(tmp_path) == []
