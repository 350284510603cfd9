"""`spear-mm train key=value ...`: continual pretraining (Hydra; see docs/train.md)."""

from __future__ import annotations

DESCRIPTION = (
    "Continual pretraining of a causal LM on domain text, with optional general replay, freezing,\n"
    "HF-format checkpoints and exact resume. Multi-GPU with a shipped accelerate config:\n"
    '  accelerate launch --config_file "$(spear-mm train --accelerate-config fsdp)" \\\n'
    "      -m spear_mm.cli.main train experiment=llama31_8b_finance\n"
    "`spear-mm train --accelerate-config list` lists the shipped configs (fsdp, fsdp_4gpu,\n"
    "deepspeed_zero3) with their installed paths."
)


def _task(cfg) -> int:
    from spear_mm.train.loop import run_training

    run_training(cfg)  # a TrainConfig (hydra_app converts once)
    return 0


def _print_accelerate_config(argv: list[str]) -> int:
    """`--accelerate-config NAME` prints the path of a shipped config; `list` prints them all."""
    from spear_mm.errors import UserError
    from spear_mm.train.launch import accelerate_config, accelerate_configs

    i = argv.index("--accelerate-config")
    if i + 1 >= len(argv) or len(argv) != 2:
        raise UserError(
            "--accelerate-config takes one name and nothing else, e.g. "
            "`spear-mm train --accelerate-config fsdp` (or `list`)"
        )
    name = argv[i + 1]
    if name == "list":
        for key, path in accelerate_configs().items():
            print(f"{key:<16} {path}")
    else:
        print(accelerate_config(name))
    return 0


def main(argv: list[str]) -> int:
    if "--accelerate-config" in argv:
        return _print_accelerate_config(argv)
    from spear_mm.cli.hydra_app import run_verb
    from spear_mm.train.config import TrainConfig, register_configs

    register_configs()
    return run_verb("train", argv, TrainConfig, _task, DESCRIPTION)
