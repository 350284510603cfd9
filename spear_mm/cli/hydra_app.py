"""Hydra plumbing shared by the config-driven verbs (train, eval, analyze, sweep, run).

A single run composes `spear_mm/conf/<verb>.yaml` with the command line's `key=value` overrides
through Hydra's Compose API, so every mistake (unknown key, wrong type, missing group option)
becomes a one-line `UserError` naming the key and the config file, exit code 2. `-m` /
`--multirun` hands the same task to Hydra's own launcher (grids such as `trainer.lr=1e-4,3e-4`);
each job then writes into `<out>/<job number>`.

Validation: the composed config is merged into the verb's dataclass schema (types checked by
OmegaConf) and turned into the dataclass (`OmegaConf.to_object`), so a schema's `__post_init__`
can check ranges and raise `UserError`. The task receives the typed, resolved `DictConfig`.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

from spear_mm.errors import UserError

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"


def _conf_file(verb: str) -> str:
    return f"spear_mm/conf/{verb}.yaml"


def compose(verb: str, overrides: list[str], schema: type | None = None):
    """Compose and validate `conf/<verb>.yaml` with overrides; raises UserError."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None, job_name=verb):
            cfg = hydra_compose(config_name=verb, overrides=overrides)
    except (HydraException, OmegaConfBaseException, ValueError) as exc:
        cause = exc.__cause__  # Hydra's own line ("Could not override 'x'") omits the reason
        key = (
            getattr(cause, "full_key", None) if isinstance(cause, OmegaConfBaseException) else None
        )
        if key:
            raise UserError(
                f"config key '{key}' for `spear-mm {verb}` ({_conf_file(verb)} + overrides): "
                f"{_first_line(cause)}; fix the key or value, see `spear-mm {verb} --help`"
            ) from None
        raise UserError(
            f"bad config for `spear-mm {verb}` ({_conf_file(verb)}): {_first_line(exc)}"
        ) from None
    finally:
        GlobalHydra.instance().clear()
    return validate(verb, cfg, schema)


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
            f"config key '{key}' for `spear-mm {verb}` ({_conf_file(verb)} + overrides): "
            f"{_first_line(exc)}; fix the value or see `spear-mm {verb} --help`"
        ) from None
    OmegaConf.set_struct(typed, True)
    return typed


def _first_line(exc: BaseException) -> str:
    msg = getattr(exc, "msg", None) or str(exc)
    return (
        " ".join(str(msg).strip().splitlines()[0].split())
        if str(msg).strip()
        else type(exc).__name__
    )


def print_help(verb: str, description: str, schema: type | None) -> None:
    from omegaconf import OmegaConf

    print(f"usage: spear-mm {verb} [-m] [key=value ...]\n\n{description}\n")
    groups = sorted(p.name for p in CONF_DIR.iterdir() if p.is_dir())
    for group in groups:
        options = sorted(f.stem for f in (CONF_DIR / group).glob("*.yaml"))
        if options:
            print(f"  {group}=: {', '.join(options)}")
    try:
        cfg = compose(verb, [], None)
        print(f"\ndefaults ({_conf_file(verb)}):\n")
        print(OmegaConf.to_yaml(cfg))
    except UserError as exc:
        print(f"\n(defaults could not be composed: {exc})")


def run_verb(
    verb: str,
    argv: list[str],
    schema: type | None,
    task: Callable,
    description: str = "",
    write_info: bool = True,
) -> int:
    """Run `task(cfg)` for `spear-mm <verb> argv...`; returns the exit code."""
    if any(a in ("-h", "--help") for a in argv):
        print_help(verb, description, schema)
        return 0
    multirun = any(a in ("-m", "--multirun") for a in argv)
    overrides = [a for a in argv if a not in ("-m", "--multirun")]
    bad = [a for a in overrides if "=" not in a and not a.startswith(("+", "~"))]
    if bad:
        raise UserError(
            f"argument '{bad[0]}' for `spear-mm {verb}` is not key=value; "
            f"see `spear-mm {verb} --help`"
        )
    if multirun:
        return _multirun(verb, overrides, schema, task, write_info)
    cfg = compose(verb, overrides, schema)
    return _run_task(cfg, task, write_info)


RUN_INFO_FILES = ("config.yaml", "run_info.json")


def _run_task(cfg, task: Callable, write_info: bool) -> int:
    out = Path(cfg.out) if write_info and cfg.get("out") else None
    saved = _snapshot(out) if out is not None else None
    if out is not None:
        from spear_mm.runinfo import write_run_info

        seeds = {"seed": cfg.get("seed")} if "seed" in cfg else {}
        write_run_info(cfg.out, cfg, seeds)
    try:
        result = task(cfg)
    except UserError:
        if out is not None:
            _restore(out, saved)
        raise
    return int(result or 0)


def _snapshot(out: Path) -> dict:
    """The run-info files already in `out` (bytes, or None when absent) and whether it existed."""
    files = {n: (out / n).read_bytes() if (out / n).is_file() else None for n in RUN_INFO_FILES}
    return {"existed": out.exists(), "files": files}


def _restore(out: Path, saved: dict) -> None:
    """Bad input found by the task: put back the run-info files of the last run in `out` (or
    remove ours), so a rejected command leaves the folder as it found it."""
    for name, data in saved["files"].items():
        if data is None:
            (out / name).unlink(missing_ok=True)
        else:
            (out / name).write_bytes(data)
    if not saved["existed"]:
        try:
            out.rmdir()  # only if nothing else was written
        except OSError:
            pass


def _multirun(verb: str, overrides: list[str], schema, task, write_info) -> int:
    """Hydra's launcher over the comma-separated sweeps in `overrides`."""
    import hydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf, open_dict

    codes: list[int] = []

    def job(cfg) -> None:
        typed = validate(verb, cfg, schema)
        job_num = HydraConfig.get().job.num
        with open_dict(typed):
            base = typed.get("out") or HydraConfig.get().sweep.dir
            typed.out = str(Path(base) / str(job_num))
        OmegaConf.set_struct(typed, True)
        codes.append(_run_task(typed, task, write_info))

    app = hydra.main(config_path=str(CONF_DIR), config_name=verb, version_base=None)(job)
    saved = sys.argv
    sys.argv = [
        f"spear-mm-{verb}",
        "--multirun",
        *overrides,
        "hydra.sweep.dir=multirun/${now:%Y-%m-%d_%H-%M-%S}",
        "hydra/job_logging=none",
        "hydra/hydra_logging=none",
    ]
    try:
        app()
    finally:
        sys.argv = saved
    return max(codes, default=0)
