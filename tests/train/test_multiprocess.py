"""`spear-mm train` with two processes on this CPU machine (gloo), each against one process at
the same global batch: 2 ranks x batch b == 1 rank x batch 2b (docs/train.md, multi-process)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from spear_mm.train.runtime import RunPlan

BIN = Path(sys.executable).parent
pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "MASTER_ADDR")}
    return {**env, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1",
            **extra}  # fmt: skip


def _args(tiny_model, corpora, out, batch) -> list[str]:
    return [f"model={tiny_model}", f"data.domain={corpora[0]}", f"data.general={corpora[1]}",
            "data.replay_ratio=0.25", "data.seq_len=32", "data.val_max_blocks=2",
            "trainer.max_steps=3", f"trainer.batch_size={batch}", "trainer.num_threads=1",
            "trainer.freeze=[layers\\.0\\.self_attn\\.]", "trainer.save_every=3",
            f"out={out}"]  # fmt: skip


def _rows(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]


def test_two_ranks_match_one_rank_at_the_same_global_batch(tiny_model, corpora, tmp_path):
    config = subprocess.run(
        [BIN / "spear-mm", "train", "--accelerate-config", "cpu_ddp"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    two, one = tmp_path / "two", tmp_path / "one"
    launch = [BIN / "accelerate", "launch", "--config_file", config, "--main_process_port",
              str(_free_port()), "-m", "spear_mm.cli.main", "train"]  # fmt: skip
    proc = subprocess.run(
        [*map(str, launch), *_args(tiny_model, corpora, two, 2)],
        env=_env(), capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc1 = subprocess.run(
        [str(BIN / "spear-mm"), "train", *_args(tiny_model, corpora, one, 4)],
        env=_env(), capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc1.returncode == 0, proc1.stderr[-3000:]
    rows2, rows1 = _rows(two), _rows(one)
    # Metrics come from rank 0 only: one row per step, none doubled.
    assert [r["step"] for r in rows2] == [r["step"] for r in rows1] == [0, 1, 2, 3]
    for a, b in zip(rows2[1:], rows1[1:]):
        assert a["tokens"] == b["tokens"] == b["step"] * 4 * 32
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-5)  # fp32 all-reduce order
    w2, w1 = (
        load_file(two / "final" / "model.safetensors"),
        load_file(one / "final" / "model.safetensors"),
    )
    base = load_file(tiny_model / "model.safetensors")
    assert set(w2) == set(w1)
    for name in w1:
        assert torch.allclose(w2[name], w1[name], atol=1e-6, rtol=0), name
        if "layers.0.self_attn." in name:  # frozen: bit-identical under data parallelism
            assert torch.equal(w2[name], base[name]), name
    state = json.loads((two / "final" / "trainer_state.json").read_text())
    assert (state["processes"], state["distributed"]) == (2, "MULTI_CPU")
    # One checkpoint (written by rank 0), loadable.
    from transformers import AutoModelForCausalLM

    assert AutoModelForCausalLM.from_pretrained(two / "final").num_parameters() > 0
    assert sorted(p.name for p in (two / "checkpoints").iterdir()) == ["step-3"]


def test_ranks_share_each_global_batch_without_overlap():
    # Every position of a step is read once, by exactly one rank and micro-step; the union over
    # ranks is the single-process step, so an epoch is seen once at any world size.
    for world, accum in ((2, 1), (2, 3), (4, 2)):
        many = RunPlan(10, 3, accum, world, 32)
        one = RunPlan(10, 3 * world, accum, 1, 32)
        for step in range(10):
            seen = [
                p for m in range(accum) for r in range(world) for p in many.positions(step, m, r)
            ]
            assert sorted(seen) == list(many.step_positions(step)) == list(one.step_positions(step))


def test_fsdp_config_without_gpu_is_refused_not_downgraded(tiny_model, corpora, tmp_path):
    # accelerate launch --config_file fsdp.yaml sets this for every rank; on CPUs accelerate
    # would otherwise fail inside or quietly train plain data parallel.
    out = tmp_path / "fsdp"
    proc = subprocess.run(
        [str(BIN / "spear-mm"), "train", *_args(tiny_model, corpora, out, 2)],
        env=_env(ACCELERATE_USE_FSDP="true"), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "FSDP" in lines[0] and "cpu_ddp" in lines[0]
    assert not out.exists()


def test_launch_that_cannot_form_its_group_is_a_one_line_error(tiny_model, corpora, tmp_path):
    out = tmp_path / "bad"
    # WORLD_SIZE says 2 but no launcher set up a rendezvous (no MASTER_ADDR, no second rank).
    proc = subprocess.run(
        [str(BIN / "spear-mm"), "train", *_args(tiny_model, corpora, out, 2)],
        env=_env(WORLD_SIZE="2", RANK="0", LOCAL_RANK="0"), capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("spear-mm: error:"), proc.stderr[-2000:]
    assert not out.exists()  # run-info files put back: `out` is as it was (absent)


def test_sigkill_of_a_two_rank_run_then_resume_reproduces_its_losses(tiny_model, corpora, tmp_path):
    import signal
    import time

    from spear_mm.train.metrics import read_metrics

    config = subprocess.run(
        [BIN / "spear-mm", "train", "--accelerate-config", "cpu_ddp"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip

    def command(out: Path) -> list[str]:
        args = [f"model={tiny_model}", f"data.domain={corpora[0]}", f"data.general={corpora[1]}",
                "data.replay_ratio=0.25", "data.seq_len=32", "data.val_max_blocks=2",
                "trainer.max_steps=16", "trainer.batch_size=2", "trainer.save_every=4",
                "trainer.eval_every=8", "trainer.num_threads=1", "trainer.progress=false",
                f"out={out}"]  # fmt: skip
        return [str(BIN / "accelerate"), "launch", "--config_file", config,
                "--main_process_port", str(_free_port()), "-m", "spear_mm.cli.main", "train",
                *args]  # fmt: skip

    full, killed = tmp_path / "full", tmp_path / "killed"
    subprocess.run(command(full), env=_env(), check=True, capture_output=True, timeout=600)
    # The launcher and both ranks in one process group, killed together as a scheduler would.
    proc = subprocess.Popen(
        command(killed), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    deadline = time.time() + 300
    while not (killed / "checkpoints" / "step-4").is_dir():
        assert proc.poll() is None and time.time() < deadline, "run ended before the kill"
        time.sleep(0.005)
    time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (killed / "final").exists(), "the kill came too late to test anything"
    subprocess.run(command(killed), env=_env(), check=True, capture_output=True, timeout=600)
    want, got = read_metrics(full / "metrics.jsonl"), read_metrics(killed / "metrics.jsonl")
    assert [r["step"] for r in got] == [r["step"] for r in want] == list(range(17))
    for a, b in zip(want, got):
        for key in ("loss", "lr", "tokens", "val_loss", "val_loss_general"):
            assert a.get(key) == b.get(key), (a["step"], key)  # same world size: exact
