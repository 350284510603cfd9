"""`spear-mm train key=value ...`: continual pretraining (Hydra; see docs/train.md)."""

from __future__ import annotations

DESCRIPTION = (
    "Continual pretraining of a causal LM on domain text, with optional general replay, freezing,\n"
    "HF-format checkpoints and exact resume. Multi-GPU: `accelerate launch --config_file\n"
    "recipes/accelerate/fsdp.yaml -m spear_mm.cli.main train experiment=llama31_8b_finance`."
)


def _task(cfg) -> int:
    from omegaconf import OmegaConf

    from spear_mm.train.loop import run_training

    run_training(OmegaConf.to_object(cfg))
    return 0


def main(argv: list[str]) -> int:
    from spear_mm.cli.hydra_app import run_verb
    from spear_mm.train.config import TrainConfig, register_configs

    register_configs()
    return run_verb("train", argv, TrainConfig, _task, DESCRIPTION)
