"""Shared fixtures: tiny random LLaMA pairs, offline environment."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402

from spear_mm.testing import make_tiny_llama, perturb_checkpoint  # noqa: E402


@pytest.fixture(scope="session")
def tiny_pair(tmp_path_factory):
    """(base, adapted) folders: a 4-layer tied tiny LLaMA and a perturbed copy."""
    root = tmp_path_factory.mktemp("tiny_pair")
    base = make_tiny_llama(root / "base", num_layers=4, seed=0)
    adapted = perturb_checkpoint(base, root / "adapted", scale=0.05, seed=1)
    return base, adapted


@pytest.fixture(scope="session")
def tiny_base(tiny_pair):
    return tiny_pair[0]
