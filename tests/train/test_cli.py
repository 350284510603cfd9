"""`spear-mm train` as a real subprocess: one-line config errors, run folder contents, multirun."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

CLI = Path(sys.executable).with_name("spear-mm")


def _run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    return subprocess.run(
        [str(CLI), "train", *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=300
    )


@pytest.mark.parametrize(
    "override, key",
    [
        ("trainer.lr=-1", "trainer.lr"),
        ("data.replay_ratio=1.5", "data.replay_ratio"),
        ("trainer.mixed_precision=fp8", "trainer.mixed_precision"),
        ("trainer.batch_size=many", "trainer.batch_size"),
        ("trainer.learning_rate=1e-4", "trainer.learning_rate"),
        ("model.dtype=int4", "model.dtype"),
    ],
)
def test_config_errors_are_one_line_and_name_the_key(override, key, tmp_path):
    proc = _run(override, f"out={tmp_path / 'x'}")
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("spear-mm: error:") and key in lines[0]
    assert not (tmp_path / "x" / "checkpoints").exists()


def _tiny_args(tiny_model, corpora, out) -> list[str]:
    return [
        f"model={tiny_model}",  # a folder for the model group means model.name (docs/quickstart)
        f"data.domain={corpora[0]}",
        f"data.general={corpora[1]}",
        "data.seq_len=32",
        "data.val_max_blocks=2",
        "trainer.max_steps=2",
        "trainer.batch_size=2",
        "trainer.progress=false",
        "trainer.num_threads=1",
        f"out={out}",
    ]


def test_run_folder_has_config_run_info_metrics_final(tiny_model, corpora, tmp_path):
    out = tmp_path / "run"
    proc = _run(*_tiny_args(tiny_model, corpora, out), "seed=7")
    assert proc.returncode == 0, proc.stderr
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["seed"] == 7 and cfg["trainer"]["max_steps"] == 2
    assert cfg["model"]["name"] == str(tiny_model)
    info = json.loads((out / "run_info.json").read_text())
    assert info["seeds"] == {"seed": 7} and "torch" in info["versions"]
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [0, 1, 2]
    assert {"loss", "lr", "tokens", "tokens_per_s", "val_loss", "val_loss_general"} <= set(rows[2])
    assert rows[2]["tokens"] == 2 * 2 * 32
    assert (out / "final" / "model.safetensors").is_file()


def test_multirun_grid_writes_one_folder_per_job(tiny_model, corpora, tmp_path):
    out = tmp_path / "grid"
    proc = _run("-m", *_tiny_args(tiny_model, corpora, out), "trainer.lr=1e-3,2e-3", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    lrs = sorted(
        yaml.safe_load((out / j / "config.yaml").read_text())["trainer"]["lr"] for j in ("0", "1")
    )
    assert lrs == [1e-3, 2e-3]
    assert (out / "0" / "final").is_dir() and (out / "1" / "final").is_dir()


def test_multirun_bad_value_reports_each_failed_job_and_exits_2(tiny_model, corpora, tmp_path):
    out = tmp_path / "grid"
    proc = _run("-m", *_tiny_args(tiny_model, corpora, out), "trainer.lr=-1,1e-3", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    errors = [x for x in proc.stderr.splitlines() if x.startswith("spear-mm: error:")]
    assert errors[0].startswith("spear-mm: error: job 0 (trainer.lr=-1): trainer.lr")
    assert errors[-1] == "spear-mm: error: 1 of 2 multirun jobs failed: job 0 (trainer.lr=-1)"
    assert "Traceback" not in proc.stderr
    assert (out / "1" / "final").is_dir() and not (out / "0").exists()
    # Hydra's own multirun record lives in `out`, never in the current folder.
    assert (out / "multirun.yaml").is_file() and not (tmp_path / "multirun").exists()


def test_explicit_bf16_on_a_cpu_that_emulates_it_warns_and_auto_picks_fp32(monkeypatch, capsys):
    from spear_mm.train import runtime

    monkeypatch.setattr(runtime.torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(runtime, "cpu_has_bf16", lambda: False)
    assert runtime.resolve_precision("auto") == "no"
    assert runtime.resolve_precision("bf16") == "bf16"  # honoured, with a warning
    assert "emulated and far slower than fp32" in capsys.readouterr().err
    monkeypatch.setattr(runtime, "cpu_has_bf16", lambda: True)
    assert runtime.resolve_precision("auto") == "bf16"
    assert capsys.readouterr().err == ""
