"""Validate a composed config against a verb's dataclass schema (below every stage).

`spear_mm.cli.hydra_app` composes `conf/<verb>.yaml` with the command line and validates it here,
then hands the task the dataclass (`OmegaConf.to_object`): tasks and pipeline stages only ever see
typed configs (the pipeline fills a stage's paths with `dataclasses.replace`, which re-runs its
checks).
"""

from __future__ import annotations

from spear_mm.errors import UserError


def conf_file(verb: str) -> str:
    return f"spear_mm/conf/{verb}.yaml"


def validate(verb: str, cfg, schema: type | None):
    """Merge `cfg` into `schema`, check types and the schema's own rules; typed DictConfig."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    if schema is None:
        return cfg
    try:
        typed = OmegaConf.merge(OmegaConf.structured(schema), cfg)
        OmegaConf.to_object(typed)  # runs __post_init__ checks; raises on missing values
    except OmegaConfBaseException as exc:
        key = getattr(exc, "full_key", None) or "?"
        raise UserError(
            f"config key '{key}' for `spear-mm {verb}` ({conf_file(verb)} + overrides): "
            f"{first_line(exc)}; fix the value or see `spear-mm {verb} --help`"
        ) from None
    OmegaConf.set_struct(typed, True)
    return typed


def first_line(exc: BaseException) -> str:
    msg = getattr(exc, "msg", None) or str(exc)
    return (
        " ".join(str(msg).strip().splitlines()[0].split())
        if str(msg).strip()
        else type(exc).__name__
    )
