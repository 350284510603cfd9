"""Numerical guards: a merge never writes NaN/Inf (it names the tensor and writes nothing), and
training stops on a non-finite loss keeping its last good checkpoint.

Already covered elsewhere (not repeated): a merge whose *computed* values are NaN
(tests/merge/test_executor.py::test_nan_output_is_an_error_and_writes_nothing) and a loss that is
non-finite from the first step (tests/train/test_freeze.py::test_non_finite_loss_stops_...).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from spear_mm.errors import UserError
from spear_mm.io.checkpoint import CheckpointReader
from spear_mm.merge.executor import run_merge
from spear_mm.merge.inmemory import InMemoryMerger
from spear_mm.merge.recipe import recipe_from_dict
from spear_mm.testing import make_tiny_llama, perturb_checkpoint

TENSOR = "model.layers.0.self_attn.v_proj.weight"


def _poisoned(src: Path, dst: Path, name: str, value: float, row: int = 0) -> Path:
    shutil.copytree(src, dst)
    weights = load_file(dst / "model.safetensors")
    weights[name] = weights[name].clone()
    weights[name][row, 0] = value
    save_file(weights, dst / "model.safetensors", {"format": "pt"})
    return dst


@pytest.mark.parametrize(
    "which, value, recipe, words",
    [
        ("adapted", float("nan"), {"default": 0.5}, "merged values contain NaN"),
        ("adapted", float("inf"), {"default": 0.5, "method": "lerp"}, "merged values contain"),
        ("base", float("-inf"), {"default": "freeze"}, "base checkpoint's values contain"),
        ("adapted", float("nan"), {"default": "keep"}, "adapted checkpoint's values contain"),
    ],
)
def test_merge_names_the_non_finite_tensor_and_writes_nothing(
    tmp_path, small_pair, which, value, recipe, words
):
    base, adapted = small_pair
    src = base if which == "base" else adapted
    poisoned = _poisoned(src, tmp_path / "poisoned", TENSOR, value)
    pair = {"base": str(base), "adapted": str(adapted), which: str(poisoned), **recipe}
    with pytest.raises(UserError, match=f"tensor {TENSOR}: .*{words}") as err:
        run_merge(recipe_from_dict(pair), tmp_path / "out", progress=False)
    assert "\n" not in str(err.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["poisoned"]  # no output, no temp


def test_grown_vocabulary_rows_are_checked_too(tmp_path):
    base = make_tiny_llama(tmp_path / "base", num_layers=1, tie_embeddings=False, seed=0)
    grown = perturb_checkpoint(base, tmp_path / "grown", scale=0.1, seed=1, grow_vocab=4)
    bad = _poisoned(grown, tmp_path / "bad", "lm_head.weight", float("nan"), row=-1)
    data = {"base": str(base), "adapted": str(bad), "default": "freeze"}
    with pytest.raises(UserError, match="tensor lm_head.weight: .*new vocabulary rows"):
        run_merge(recipe_from_dict(data), tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_in_memory_merger_has_the_same_guard(tmp_path, small_pair):
    base, adapted = small_pair
    poisoned = _poisoned(adapted, tmp_path / "poisoned", TENSOR, float("nan"))
    merger = InMemoryMerger.from_pretrained(base, poisoned)
    recipe = recipe_from_dict({"base": str(base), "adapted": str(poisoned), "default": 0.5})
    with pytest.raises(UserError, match=f"tensor {TENSOR}: .*NaN"):
        merger.apply(recipe)


# ---------------------------------------------------------------------------------- training
def test_non_finite_loss_mid_run_keeps_the_last_good_checkpoint(tmp_path, small_pair, monkeypatch):
    """Weights turn NaN right after the step-2 checkpoint: the run must stop at step 3 with one
    line naming that checkpoint, write nothing after it, and leave it complete and finite."""
    from spear_mm.train import loop
    from spear_mm.train.checkpoint import list_checkpoints
    from spear_mm.train.config import DataConfig, ModelConfig, TrainConfig, TrainerConfig

    corpus = tmp_path / "domain.jsonl"
    lines = [f'{{"text": "doc {i}: the loan rate and the bond market {i}."}}' for i in range(40)]
    corpus.write_text("\n".join(lines) + "\n")
    real_save = loop.Trainer.save

    def save_then_poison(self, step, tokens):
        real_save(self, step, tokens)
        if step == 2:
            with torch.no_grad():
                next(self.model.parameters()).fill_(float("nan"))

    monkeypatch.setattr(loop.Trainer, "save", save_then_poison)
    out = tmp_path / "run"
    cfg = TrainConfig(
        model=ModelConfig(name=str(small_pair[0])),
        data=DataConfig(domain=str(corpus), general=None, seq_len=16, val_max_blocks=2),
        trainer=TrainerConfig(
            max_steps=6, batch_size=2, save_every=1, lr=1e-3, mixed_precision="no",
            progress=False, eval_at_start=False,
        ),
        out=str(out),
    )  # fmt: skip
    with pytest.raises(UserError) as err:
        loop.run_training(cfg)
    message = str(err.value)
    assert "\n" not in message and "non-finite" in message and "at step 3" in message
    assert str(out / "checkpoints" / "step-2") in message
    assert [s for s, _ in list_checkpoints(out)] == [2]  # step-1's train state was pruned
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-1", "step-2"]
    assert not (out / "final").exists()
    with CheckpointReader(out / "checkpoints" / "step-2") as reader:
        assert all(torch.isfinite(reader.get(n)).all() for n in reader.names)
