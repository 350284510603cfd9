"""`spear-mm train` with two processes on this CPU machine (gloo), each against one process at
the same global batch: 2 ranks x batch b == 1 rank x batch 2b (docs/train.md, "Several
processes"). One 2-rank run and one 1-rank run are shared by the assertions (module fixture) and
the 2-rank run is also the uninterrupted reference of the SIGKILL test, so the file stays within
its CI budget (docs/benchmarks.md records its wall time)."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from spear_mm.train.runtime import RunPlan

BIN = Path(sys.executable).parent
HERE = Path(__file__).parent
FROZEN = "layers.0.self_attn."
STEPS = 8
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
            f"trainer.max_steps={STEPS}", f"trainer.batch_size={batch}", "trainer.num_threads=1",
            # fp32 on every CPU: precision=auto picks bf16 where the CPU has it (AVX512-BF16 /
            # AMX), and bf16 kernels differ between batch 2 and batch 4 by more than 1e-5
            "trainer.mixed_precision=no",
            "trainer.freeze=[layers\\.0\\.self_attn\\.]", "trainer.save_every=2",
            "trainer.eval_every=4", f"out={out}"]  # fmt: skip


def _launch(tiny_model, corpora, out) -> list[str]:
    config = str(Path(__file__).parents[2] / "spear_mm/train/accelerate/cpu_ddp.yaml")
    return [str(BIN / "accelerate"), "launch", "--config_file", config, "--main_process_port",
            str(_free_port()), "-m", "spear_mm.cli.main", "train",
            *_args(tiny_model, corpora, out, 2)]  # fmt: skip


def _rows(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]


def _files(out: Path) -> set[str]:
    """Every file under `out` except the per-rank resume state and the run's own records."""
    return {
        str(p.relative_to(out))
        for p in out.rglob("*")
        if p.is_file() and "train_state" not in p.parts and p.name != "run_info.json"
    }


@pytest.fixture(scope="module")
def runs(tiny_model, corpora, tmp_path_factory):
    """(2-rank out, 1-rank out, 2-rank stderr): 2 x batch 2 and 1 x batch 4, same args."""
    root = tmp_path_factory.mktemp("multiprocess")
    two, one = root / "two", root / "one"
    proc = subprocess.run(_launch(tiny_model, corpora, two), env=_env(), capture_output=True,
                          text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc1 = subprocess.run(
        [str(BIN / "spear-mm"), "train", *_args(tiny_model, corpora, one, 4)],
        env=_env(), capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc1.returncode == 0, proc1.stderr[-3000:]
    return two, one, proc.stderr


def test_two_ranks_match_one_rank_at_the_same_global_batch(runs, tiny_model):
    two, one, _ = runs
    rows2, rows1 = _rows(two), _rows(one)
    assert [r["step"] for r in rows2] == [r["step"] for r in rows1] == list(range(STEPS + 1))
    for a, b in zip(rows2[1:], rows1[1:]):
        assert a["tokens"] == b["tokens"] == b["step"] * 4 * 32
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-5)  # fp32 all-reduce order
        assert a["lr"] == b["lr"]
        assert a.get("val_loss") == pytest.approx(b.get("val_loss"), abs=1e-5)
    w2, w1 = (
        load_file(two / "final/model.safetensors"),
        load_file(one / "final/model.safetensors"),
    )
    base = load_file(tiny_model / "model.safetensors")
    assert set(w2) == set(w1) == set(base)
    for name in w1:
        assert torch.allclose(w2[name], w1[name], atol=1e-6, rtol=0), name
        if FROZEN in name:  # frozen: bit-identical to the base under data parallelism
            assert torch.equal(w2[name], base[name]), name
        elif name.endswith("proj.weight"):
            assert not torch.equal(w2[name], base[name]), name  # trainable ones did train
    state = json.loads((two / "final/trainer_state.json").read_text())
    assert (state["processes"], state["distributed"]) == (2, "MULTI_CPU")
    assert json.loads((one / "final/trainer_state.json").read_text())["processes"] == 1


def test_one_checkpoint_per_save_written_by_rank_0_and_loadable(runs):
    from transformers import AutoModelForCausalLM

    two, one, _ = runs
    # The 2-rank `out` holds the same files as the 1-rank one: one HF folder per save (no
    # per-rank copies, no temp folders left behind), one metrics file, one config.
    assert _files(two) == _files(one)
    saves = sorted(p.name for p in (two / "checkpoints").iterdir())
    assert saves == [f"step-{s}" for s in range(2, STEPS + 1, 2)]
    ranks = sorted(p.name for p in (two / "checkpoints" / saves[-1] / "train_state").iterdir())
    assert "random_states_0.pkl" in ranks and "random_states_1.pkl" in ranks  # resume per rank
    model = AutoModelForCausalLM.from_pretrained(two / "final")
    saved = load_file(two / "final/model.safetensors")
    live = model.state_dict()
    for name, tensor in saved.items():
        assert torch.equal(live[name], tensor), name


def test_progress_and_metrics_from_rank_0_only(runs):
    two, one, stderr = runs
    lines = (two / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == len(set(lines)) == STEPS + 1  # one row per step, none doubled
    # tqdm draws a bar once without a postfix, when it opens: one bar, not one per rank.
    opened = re.findall(rf"\| 0/{STEPS} \[[0-9:]+<\?, \?it/s\]", stderr)
    assert len(opened) == 1, stderr[-2000:]


def test_sigkill_of_a_two_rank_run_then_resume_reproduces_its_losses(
    runs, tiny_model, corpora, tmp_path
):
    from spear_mm.train.metrics import read_metrics

    full, killed = runs[0], tmp_path / "killed"
    # The launcher and both ranks in one process group, killed together as a scheduler would.
    proc = subprocess.Popen(
        _launch(tiny_model, corpora, killed), env=_env(), stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    deadline = time.time() + 300
    while not (killed / "checkpoints/step-2").is_dir():
        assert proc.poll() is None and time.time() < deadline, "run ended before the kill"
        time.sleep(0.005)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (killed / "final").exists(), "the kill came too late to test anything"
    resumed = subprocess.run(_launch(tiny_model, corpora, killed), env=_env(),
                             capture_output=True, text=True, timeout=600)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    want, got = read_metrics(full / "metrics.jsonl"), read_metrics(killed / "metrics.jsonl")
    assert [r["step"] for r in got] == [r["step"] for r in want] == list(range(STEPS + 1))
    for a, b in zip(want, got):
        for key in ("loss", "lr", "tokens", "val_loss", "val_loss_general"):
            assert a.get(key) == b.get(key), (a["step"], key)  # same world size: exact
    final_a, final_b = (
        load_file(full / "final/model.safetensors"),
        load_file(killed / "final/model.safetensors"),
    )
    assert all(torch.equal(final_a[k], final_b[k]) for k in final_a)


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


def test_fsdp2_on_a_cpu_mesh_keeps_frozen_tensors_and_matches_one_process(tiny_model, tmp_path):
    # accelerate 1.15 runs FSDP on GPUs only (see the next test); torch's own FSDP2 runs on a
    # CPU mesh over gloo, so the sharded path's freeze and numerics are tested through it.
    spec = importlib.util.spec_from_file_location("fsdp2_worker", HERE / "fsdp2_worker.py")
    worker = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(worker)
    out = tmp_path / "fsdp2"
    proc = subprocess.run(
        [str(BIN / "torchrun"), "--standalone", "--nproc_per_node", "2",
         str(HERE / "fsdp2_worker.py"), str(tiny_model), str(out)],
        env=_env(), capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    losses, state = worker.train(tiny_model, shard=False)
    sharded = torch.load(out / "state.pt")
    assert json.loads((out / "losses.json").read_text()) == pytest.approx(losses, abs=1e-5)
    base = load_file(tiny_model / "model.safetensors")
    frozen = [k for k in base if FROZEN in k]
    assert frozen
    for name in state:
        assert torch.allclose(sharded[name], state[name], atol=1e-6, rtol=0), name
    for name in frozen:
        assert torch.equal(sharded[name], base[name]), name


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
