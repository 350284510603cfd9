"""Fault injection on `spear-mm train`: SIGKILL inside the checkpoint-write window, repeatedly.

The run saves a checkpoint after every step, so most of its time after start-up is spent near a
save. Each attempt resumes the previous one and is killed at a seeded random moment just after a
checkpoint temp folder appears (i.e. while `train_state/`, shards or `trainer_state.json` are
being written, or while older train states are pruned). After every kill, every checkpoint that
resume could pick (`list_checkpoints`) must be complete and readable; the last attempt runs to the
end and its metrics and final weights must equal an uninterrupted run's exactly. The approach is
that of tests/train/test_resume.py, aimed at the write window.
"""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from spear_mm.io.checkpoint import CheckpointReader
from spear_mm.testing import make_tiny_llama, write_pseudo_corpus
from spear_mm.train.checkpoint import STATE_DIR, list_checkpoints, read_trainer_state
from spear_mm.train.metrics import read_metrics

STEPS = 12
KILLS = 4
SEED = 99


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> tuple[Path, Path, Path]:
    root = tmp_path_factory.mktemp("rel_train")
    model = make_tiny_llama(root / "model", num_layers=2, hidden=128, seed=5)
    domain = write_pseudo_corpus(root / "domain.jsonl", 60, seed=0, max_words=100)
    general = write_pseudo_corpus(root / "general.jsonl", 40, seed=1, max_words=100)
    return model, domain, general


def _args(setup, out: Path) -> list[str]:
    model, domain, general = setup
    return [
        "train",
        f"model.name={model}",
        f"data.domain={domain}",
        f"data.general={general}",
        "data.replay_ratio=0.25",
        "data.seq_len=64",
        "data.val_max_blocks=2",
        f"trainer.max_steps={STEPS}",
        "trainer.batch_size=2",
        "trainer.lr=2e-3",
        "trainer.warmup_steps=2",
        "trainer.save_every=1",
        "trainer.eval_every=5",
        "trainer.mixed_precision=no",
        "trainer.num_threads=1",
        "trainer.progress=false",
        "seed=4",
        f"out={out}",
    ]


def _assert_resumable_checkpoints_complete(out: Path) -> int:
    """Every checkpoint resume could pick is whole; returns the newest step (0 if none)."""
    found = list_checkpoints(out)
    for step, folder in found:
        assert read_trainer_state(folder)["step"] == step
        with CheckpointReader(folder) as reader:
            for name in reader.names:
                assert torch.isfinite(reader.get(name)).all(), (folder, name)
        state = folder / STATE_DIR
        load_file(state / "model.safetensors")
        torch.load(state / "optimizer.bin", map_location="cpu", weights_only=True)
        for pkl in state.glob("*.pkl"):  # our own files: plain torch.load is fine in a test
            torch.load(pkl, map_location="cpu", weights_only=False)
    return found[-1][0] if found else 0


def test_kill_during_checkpoint_writes_then_resume_is_exact(tmp_path, rel, cli_env, setup):
    full, killed = tmp_path / "full", tmp_path / "killed"
    done = rel.run_cli(cli_env, *_args(setup, full))
    assert done.returncode == 0, done.stderr[-2000:]

    rng = random.Random(SEED)
    ckpts = killed / "checkpoints"
    resumed_from = []
    for i in range(KILLS):
        before = _assert_resumable_checkpoints_complete(killed)
        if before > STEPS - 4:
            break  # keep a few steps after every kill, so no attempt can finish in the window
        resumed_from.append(before)
        proc = rel.start_cli(cli_env, *_args(setup, killed))
        # The n-th checkpoint this attempt writes: a fresh temp folder beside the checkpoints.
        target = f".step-{before + rng.randint(1, 2)}.tmp-"
        hit = rel.wait_for(
            lambda t=target: ckpts.is_dir() and any(t in p.name for p in ckpts.iterdir()),
            proc,
            timeout=180,
        )
        assert hit, f"attempt {i}: the run ended before writing {target}"
        # Within the checkpoint's write window (tens of ms for this model on a loaded machine).
        time.sleep(rng.uniform(0.0, 0.05))
        assert rel.kill_cli(proc) is None, f"attempt {i} finished before the kill"
        assert not (killed / "final").exists()
    newest = _assert_resumable_checkpoints_complete(killed)
    print("resumed from steps", resumed_from, "then", newest)
    assert len(resumed_from) >= 2 and newest > 0  # several kills, and they made progress

    last = rel.run_cli(cli_env, *_args(setup, killed))
    assert last.returncode == 0, last.stderr[-2000:]
    want, got = read_metrics(full / "metrics.jsonl"), read_metrics(killed / "metrics.jsonl")
    assert [r["step"] for r in got] == [r["step"] for r in want]
    for a, b in zip(want, got):
        for key in ("loss", "lr", "tokens", "val_loss", "val_loss_general"):
            assert a.get(key) == b.get(key), (a["step"], key)  # exact, not approximate
    with CheckpointReader(full / "final") as fa, CheckpointReader(killed / "final") as fb:
        assert fa.names == fb.names
        assert all(torch.equal(fa.get(n), fb.get(n)) for n in fa.names)
    assert rel.temp_leftovers(killed) == []
