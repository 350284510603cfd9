"""Fixtures for the train tests: a tiny model, small local corpora, a config builder."""

from __future__ import annotations

from pathlib import Path

import pytest

from spear_mm.testing import make_tiny_llama
from spear_mm.testing import write_pseudo_corpus as write_corpus
from spear_mm.train.config import DataConfig, ModelConfig, TrainConfig, TrainerConfig


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    return make_tiny_llama(tmp_path_factory.mktemp("train_tiny") / "m", num_layers=2, seed=0)


@pytest.fixture(scope="session")
def corpora(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("train_corpora")
    return (
        write_corpus(root / "domain.jsonl", 60, seed=1, prefix="fin"),
        write_corpus(root / "general.jsonl", 40, seed=2, prefix="gen"),
    )


@pytest.fixture
def make_cfg(tiny_model, corpora, tmp_path):
    """Build a small TrainConfig; keyword groups override fields of each section."""

    def build(out: str = "run", model=None, data=None, trainer=None, **top) -> TrainConfig:
        d = {
            "domain": str(corpora[0]),
            "general": str(corpora[1]),
            "seq_len": 32,
            "val_max_blocks": 4,
            **(data or {}),
        }
        t = {
            "max_steps": 6,
            "batch_size": 2,
            "lr": 1e-3,
            "mixed_precision": "no",
            "progress": False,
            **(trainer or {}),
        }
        return TrainConfig(
            model=ModelConfig(**{"name": str(tiny_model), **(model or {})}),
            data=DataConfig(**d),
            trainer=TrainerConfig(**t),
            out=str(tmp_path / out),
            **top,
        )

    return build
