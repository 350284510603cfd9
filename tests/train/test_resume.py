"""Exact resume: a run killed with SIGKILL and resumed matches an uninterrupted run step by step."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from spear_mm.io.checkpoint import CheckpointReader
from spear_mm.testing import make_tiny_llama
from spear_mm.train.metrics import read_metrics

CLI = Path(sys.executable).with_name("spear-mm")
KILL_AT = 8


def _command(model: Path, corpora, out: Path) -> list[str]:
    return [
        str(CLI),
        "train",
        f"model.name={model}",
        f"data.domain={corpora[0]}",
        f"data.general={corpora[1]}",
        "data.replay_ratio=0.25",
        "data.seq_len=64",
        "data.val_max_blocks=4",
        "trainer.max_steps=40",
        "trainer.batch_size=4",
        "trainer.grad_accum=2",
        "trainer.lr=2e-3",
        "trainer.warmup_steps=3",
        "trainer.save_every=4",
        "trainer.eval_every=10",
        "trainer.mixed_precision=bf16",
        "trainer.num_threads=1",
        "trainer.progress=false",
        "seed=3",
        f"out={out}",
    ]


def _env() -> dict:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


def test_sigkill_then_resume_matches_uninterrupted_run(tmp_path, corpora):
    model = make_tiny_llama(tmp_path / "model", num_layers=2, hidden=128, seed=5)
    full, killed = tmp_path / "full", tmp_path / "killed"
    subprocess.run(_command(model, corpora, full), env=_env(), check=True, timeout=300)

    proc = subprocess.Popen(
        _command(model, corpora, killed),
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 240
    while not (killed / f"checkpoints/step-{KILL_AT}").is_dir():
        assert proc.poll() is None and time.time() < deadline, "run ended before the kill"
        time.sleep(0.005)
    time.sleep(0.2)  # land mid-way between checkpoints: rows past step 8 must be redone
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (killed / "final").exists(), "the kill came too late to test anything"
    interrupted = {r["step"] for r in read_metrics(killed / "metrics.jsonl")}
    print("killed after step", max(interrupted))

    subprocess.run(_command(model, corpora, killed), env=_env(), check=True, timeout=300)

    want, got = read_metrics(full / "metrics.jsonl"), read_metrics(killed / "metrics.jsonl")
    assert [r["step"] for r in got] == [r["step"] for r in want]
    assert KILL_AT <= max(interrupted) < 40  # killed mid-run, after the checkpoint
    for a, b in zip(want, got):
        for key in ("loss", "lr", "tokens", "val_loss", "val_loss_general"):
            assert a.get(key) == b.get(key), (a["step"], key)  # exact, not approximate
    with CheckpointReader(full / "final") as fa, CheckpointReader(killed / "final") as fb:
        assert all(torch.equal(fa.get(n), fb.get(n)) for n in fa.names)
