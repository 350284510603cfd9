"""Fixtures for merge tests: tiny LLaMA pairs (tied / untied, bf16, sharded, grown vocabulary)."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

from spear_mm.testing import make_tiny_llama, perturb_checkpoint  # noqa: E402


@pytest.fixture(scope="session")
def pair(tmp_path_factory):
    """4-layer tied fp32 pair; noise large enough (cos ≈ 0.96) that SLERP takes its slerp path."""
    root = tmp_path_factory.mktemp("merge_pair")
    base = make_tiny_llama(root / "base", num_layers=4, seed=0)
    adapted = perturb_checkpoint(base, root / "adapted", scale=0.3, seed=1)
    return base, adapted


@pytest.fixture(scope="session")
def untied_bf16_pair(tmp_path_factory):
    """Untied bf16 pair, both sharded (several shards each, different layouts)."""
    root = tmp_path_factory.mktemp("merge_untied")
    base = make_tiny_llama(
        root / "base",
        num_layers=4,
        seed=3,
        tie_embeddings=False,
        dtype=torch.bfloat16,
        max_shard_bytes=60_000,
    )
    adapted = perturb_checkpoint(base, root / "adapted", scale=0.3, seed=4, max_shard_bytes=90_000)
    return base, adapted


@pytest.fixture(scope="session")
def grown_pair(tmp_path_factory):
    """Untied pair whose adapted model has 16 extra vocabulary rows."""
    root = tmp_path_factory.mktemp("merge_grown")
    base = make_tiny_llama(root / "base", num_layers=2, seed=5, tie_embeddings=False)
    adapted = perturb_checkpoint(base, root / "adapted", scale=0.3, seed=6, grow_vocab=16)
    return base, adapted


def write_recipe(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def load_weights(folder: Path) -> dict[str, torch.Tensor]:
    """All tensors of a (possibly sharded) safetensors folder."""
    out: dict[str, torch.Tensor] = {}
    for f in sorted(Path(folder).glob("*.safetensors")):
        out.update(load_file(f))
    return out


def spacing(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """One unit in the last place of `dtype` at the magnitude of x (fp64)."""
    mag = x.double().abs().clamp_min(torch.finfo(dtype).tiny)
    return torch.finfo(dtype).eps * torch.exp2(torch.floor(torch.log2(mag)))


@pytest.fixture(scope="session")
def mh():
    """Merge-test helpers (a fixture: with --import-mode=importlib conftest is not importable)."""
    from types import SimpleNamespace

    return SimpleNamespace(load_weights=load_weights, write_recipe=write_recipe, spacing=spacing)
