"""Fault injection on `spear-mm run experiment=tiny`: SIGKILL inside a stage, twice, then finish.

The first kill lands in an early stage (train or analyze), the second, on the re-run, in a late
one (sweep or compare), each at a seeded random moment after the stage starts. Every re-run must
reuse the stages that had finished (its log says `[stage] cached`), redo the interrupted one, and
the finished study must give the same compare/compare.json numbers as an uninterrupted run.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import pytest

STAGES = ("train", "analyze", "sweep", "compare")
NUMBERS = (
    "general_bpb",
    "finance_bpb",
    "general_mc",
    "finance_mc",
    "general_retention",
    "gain_kept",
    "forgetting_recovered",
)
SEED = 7


def _numbers(out: Path) -> list[dict]:
    rows = json.loads((out / "compare" / "compare.json").read_text())["rows"]
    return [{"model": r["model"], **{k: r.get(k) for k in NUMBERS}} for r in rows]


def _kill_in_stage(rel, cli_env, out: Path, log: Path, stage: str, delay: float) -> str:
    """Start the study, kill it `delay` seconds after `stage` starts; returns its log."""
    proc = rel.start_cli(cli_env, "run", "experiment=tiny", f"out={out}", log=log)
    started = rel.wait_for(lambda: f"[{stage}] running" in log.read_text(), proc, timeout=300)
    assert started, f"never reached [{stage}]:\n{log.read_text()[-3000:]}"
    time.sleep(delay)
    text = log.read_text()
    assert rel.kill_cli(proc) is None, "the study finished before the kill"
    assert f"[{stage}] done" not in text, f"the kill came after [{stage}] finished"
    return text


def _assert_resumed(text: str, stage: str) -> None:
    for earlier in STAGES[: STAGES.index(stage)]:
        assert f"[{earlier}] cached" in text, (earlier, text[-3000:])
    assert f"[{stage}] cached" not in text


@pytest.mark.slow
def test_run_killed_in_two_stages_resumes_and_matches(tmp_path, rel, cli_env):
    # Its own model/eval cache, so no number of the interrupted study can come from it.
    ref_env = {**cli_env, "SPEAR_MM_HOME": str(tmp_path / "ref_home")}
    reference = rel.run_cli(
        ref_env, "run", "experiment=tiny", f"out={tmp_path / 'reference'}", timeout=900
    )
    assert reference.returncode == 0, reference.stderr[-3000:]

    # Stage lengths of the uninterrupted run, to aim the kills inside a stage on any machine.
    seconds = {
        s: json.loads((tmp_path / "reference" / s / "stage.json").read_text())["seconds"]
        for s in STAGES
    }
    rng = random.Random(SEED)
    out = tmp_path / "study"
    first, second = rng.choice(STAGES[:2]), rng.choice(STAGES[2:])
    delays = [rng.uniform(0.05, 0.6) * seconds[s] for s in (first, second)]
    _kill_in_stage(rel, cli_env, out, tmp_path / "a.log", first, delays[0])
    text = _kill_in_stage(rel, cli_env, out, tmp_path / "b.log", second, delays[1])
    _assert_resumed(text, first)
    print(
        f"stage seconds {seconds}; killed in [{first}] after {delays[0]:.2f} s, "
        f"then in [{second}] after {delays[1]:.2f} s"
    )

    last = rel.run_cli(cli_env, "run", "experiment=tiny", f"out={out}", timeout=900)
    assert last.returncode == 0, last.stderr[-3000:]
    _assert_resumed(last.stdout, second)
    assert f"[{second}] running" in last.stdout
    assert _numbers(out) == _numbers(tmp_path / "reference")
    assert rel.temp_leftovers(out) == []
