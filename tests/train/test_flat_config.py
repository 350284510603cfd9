"""Trackers get the same flat hyperparameter keys under `spear-mm train` and `spear-mm run`:
both hand run_training a TrainConfig (hydra_app converts once; the pipeline builds one)."""

from __future__ import annotations

from omegaconf import OmegaConf

from spear_mm.cli.hydra_app import compose
from spear_mm.pipeline.config import RunConfig
from spear_mm.pipeline.study import train_config
from spear_mm.train.config import TrainConfig
from spear_mm.train.loop import _flat_config


def test_train_and_run_log_the_same_flat_keys(tmp_path):
    train = OmegaConf.to_object(
        compose("train", ["trainer=demo", f"out={tmp_path / 't'}"], TrainConfig)
    )
    run = OmegaConf.to_object(compose("run", [f"out={tmp_path / 'r'}"], RunConfig))
    assert isinstance(train, TrainConfig) and isinstance(run, RunConfig)
    from_train = _flat_config(train)
    from_run = _flat_config(train_config(run, tmp_path / "r" / "train"))
    assert set(from_train) == set(from_run)
    assert from_train["trainer.lr"] == from_run["trainer.lr"] == 4.0e-4  # trainer/demo.yaml
    assert from_train["model.name"] == "smollm2-135m"
    scalars = (int, float, str, bool)
    assert all(isinstance(v, scalars) for v in from_run.values())  # no nested blobs
    assert not any(isinstance(v, str) and v.startswith("{") for v in from_run.values())
