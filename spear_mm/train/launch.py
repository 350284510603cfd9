"""The accelerate launch configs that ship with the package (FSDP, DeepSpeed ZeRO-3).

They are package data (`spear_mm/train/accelerate/*.yaml`), so a `pip install`ed spear_mm finds
them without a checkout: `spear-mm train --accelerate-config fsdp` prints the installed path,
ready for `accelerate launch --config_file "$(spear-mm train --accelerate-config fsdp)" ...`.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from spear_mm.errors import UserError


def accelerate_dir() -> Path:
    return Path(str(resources.files("spear_mm.train").joinpath("accelerate")))


def accelerate_configs() -> dict[str, Path]:
    """{name: path} of the shipped accelerate configs, sorted by name."""
    return {p.stem: p for p in sorted(accelerate_dir().glob("*.yaml"))}


def accelerate_config(name: str) -> Path:
    """Path of the shipped accelerate config `name` (e.g. `fsdp`); UserError when unknown."""
    configs = accelerate_configs()
    key = Path(name).stem
    if key not in configs:
        raise UserError(
            f"--accelerate-config {name!r}: no such shipped config; "
            f"use one of {', '.join(configs) or '(none installed)'}"
        )
    return configs[key]
