"""Eval fixtures: an isolated cache/HF home, a tiny model folder and its loaded copy."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session", autouse=True)
def _isolated_homes(tmp_path_factory):
    # Keep lm-eval / datasets caches out of the user's home. SPEAR_MM_HOME stays: the slow test
    # reuses the materialized SmolLM2; every other test passes its own cache_dir.
    mp = pytest.MonkeyPatch()
    root = tmp_path_factory.mktemp("eval_homes")
    mp.setenv("HF_HOME", str(root / "hf"))
    mp.setenv("HF_DATASETS_CACHE", str(root / "hf" / "datasets"))
    mp.setenv("HF_HUB_OFFLINE", "1")
    mp.setenv("HF_DATASETS_OFFLINE", "1")
    yield
    mp.undo()


@pytest.fixture(scope="session")
def tiny_folder(tmp_path_factory):
    from spear_mm.testing import make_tiny_llama

    return make_tiny_llama(tmp_path_factory.mktemp("eval_tiny") / "model", num_layers=2, seed=3)


@pytest.fixture(scope="session")
def tiny_loaded(tiny_folder):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_folder)
    model.eval()
    return model, AutoTokenizer.from_pretrained(tiny_folder)
