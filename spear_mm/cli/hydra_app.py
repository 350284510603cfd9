"""Hydra plumbing shared by the config-driven verbs (train, eval, analyze, sweep, run).

A single run composes `spear_mm/conf/<verb>.yaml` with the command line's `key=value` overrides
through Hydra's Compose API, so every mistake (unknown key, wrong type, missing group option)
becomes a one-line `UserError` naming the key and the config file, exit code 2. `-m` /
`--multirun` hands the same task to Hydra's own launcher (grids such as `trainer.lr=1e-4,3e-4`);
each job then writes into `<out>/<job number>`.

Validation: the composed config is merged into the verb's dataclass schema (types checked by
OmegaConf) and turned into the dataclass (`OmegaConf.to_object`), so a schema's `__post_init__`
can check ranges and raise `UserError`. The resolved config is saved as a DictConfig
(config.yaml); the task receives the dataclass (`cfg: XConfig`): this is the one conversion.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable
from pathlib import Path

from spear_mm.errors import UserError
from spear_mm.schema import conf_file, first_line, validate

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"


def compose(verb: str, overrides: list[str], schema: type | None = None):
    """Compose and validate `conf/<verb>.yaml` with overrides; raises UserError."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    _register_schemas()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None, job_name=verb):
            cfg = hydra_compose(config_name=verb, overrides=overrides)
    except (HydraException, OmegaConfBaseException, ValueError) as exc:
        cause = exc.__cause__  # Hydra's own line ("Could not override 'x'") omits the reason
        key = (
            getattr(cause, "full_key", None) if isinstance(cause, OmegaConfBaseException) else None
        )
        hint = ""
        if "not in struct" in first_line(cause or exc):
            hint = "; to add a key the config does not have, write +KEY=VALUE"
        if key:
            raise UserError(
                f"config key '{key}' for `spear-mm {verb}` ({conf_file(verb)} + overrides): "
                f"{first_line(cause)}{hint}; fix the key or value, see `spear-mm {verb} --help`"
            ) from None
        raise UserError(
            f"bad config for `spear-mm {verb}` ({conf_file(verb)}): {first_line(exc)}{hint}"
        ) from None
    finally:
        GlobalHydra.instance().clear()
    return validate(verb, cfg, schema)


def _register_schemas() -> None:
    """Importing a verb's schema registers `<verb>_schema`, the first default of its YAML."""
    import spear_mm.eval.config  # noqa: F401
    import spear_mm.pipeline.config  # noqa: F401  (train, analyze, sweep and run schemas)


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
        if schema is not None:  # the schema holds the defaults the YAML does not restate
            cfg = OmegaConf.merge(OmegaConf.structured(schema), cfg)
        print(f"\ndefaults ({conf_file(verb)}):\n")
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
    overrides = rewrite_overrides(verb, overrides, schema, multirun)
    if multirun:
        return _multirun(verb, overrides, schema, task, write_info)
    cfg = compose(verb, overrides, schema)
    return _run_task(cfg, task, write_info)


def _has_model_group(verb: str) -> bool:
    from omegaconf import OmegaConf

    conf = OmegaConf.to_container(OmegaConf.load(CONF_DIR / f"{verb}.yaml"))
    return any(isinstance(d, dict) and "model" in d for d in conf.get("defaults", []))


def _open_dict_keys(schema: type | None) -> set[str]:
    """Top-level schema fields typed `dict[str, <scalar>]`: users add their own keys to them."""
    import dataclasses
    import typing

    if schema is None or not dataclasses.is_dataclass(schema):
        return set()
    hints = typing.get_type_hints(schema)
    return {
        name
        for name, hint in hints.items()
        if typing.get_origin(hint) is dict
        and typing.get_args(hint)[1:] in ((str,), (int,), (float,), (bool,))
    }


def rewrite_overrides(verb: str, overrides: list[str], schema, multirun: bool) -> list[str]:
    """Conveniences applied before Hydra sees the overrides (documented in docs/cli.md):

    - `model=X` where X is not a `conf/model` option (a folder, a hub id) means `model.name=X`,
      for every verb with a `model` group (without -m; with -m a comma list stays a sweep);
    - `KEY.NAME=V` for an open dict field of the schema (e.g. eval's `data_files`) adds or
      replaces that entry (`++KEY.NAME=V`): Hydra's struct mode would otherwise ask for `+`.
    """
    options = {p.stem for p in (CONF_DIR / "model").glob("*.yaml")}
    model_group = _has_model_group(verb)
    open_keys = _open_dict_keys(schema)
    out = []
    for arg in overrides:
        key, sep, value = arg.partition("=")
        if sep and model_group and key == "model" and value not in options:
            if not (multirun and "," in value):
                arg = f"model.name={value}"
        elif sep and key.partition(".")[0] in open_keys and "." in key:
            arg = f"++{key}={value}"
        out.append(arg)
    return out


RUN_INFO_FILES = ("config.yaml", "run_info.json")


def _run_task(cfg, task: Callable, write_info: bool) -> int:
    from spear_mm.io import runlock

    out = Path(cfg.out) if write_info and cfg.get("out") else None
    with runlock.hold(out):  # one run per out; a bad run removes the folder it created
        saved = _snapshot(out) if out is not None else None
        try:
            with runlock.disk_errors(out):  # a full disk is a one-line error too
                if out is not None:
                    from spear_mm.runinfo import write_run_info

                    seeds = {"seed": cfg.get("seed")} if "seed" in cfg else {}
                    write_run_info(cfg.out, cfg, seeds)
                from omegaconf import OmegaConf

                result = task(OmegaConf.to_object(cfg))  # the one conversion to the dataclass
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
    """Hydra's launcher over the comma-separated sweeps in `overrides`.

    A job with bad input does not stop the others: each failure prints its one-line error as
    `spear-mm: error: job N (overrides): ...`, and the sweep ends with a summary (exit 2).
    Hydra's own `multirun.yaml` goes into `out`, beside the jobs' folders `out/<job number>`,
    not into the current directory.
    """
    import hydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf, open_dict

    codes: list[int] = []
    failed: list[str] = []
    swept = {a.partition("=")[0] for a in overrides if "," in a.partition("=")[2]}

    def job(cfg) -> None:
        hc = HydraConfig.get()
        job_out = Path(cfg.get("out") or hc.sweep.dir) / str(hc.job.num)
        try:
            typed = validate(verb, cfg, schema)
            with open_dict(typed):
                typed.out = str(job_out)
            OmegaConf.set_struct(typed, True)
            codes.append(_run_task(typed, task, write_info))
        except UserError as exc:
            label = " ".join(o for o in hc.overrides.task if o.partition("=")[0] in swept)
            failed.append(f"job {hc.job.num} ({label})")
            print(f"spear-mm: error: job {hc.job.num} ({label}): {exc}", file=sys.stderr)
            codes.append(2)
            with contextlib.suppress(OSError):
                job_out.rmdir()  # Hydra made it for the job; leave no empty folder behind

    app = hydra.main(config_path=str(CONF_DIR), config_name=verb, version_base=None)(job)
    saved = sys.argv
    sys.argv = [
        f"spear-mm-{verb}",
        "--multirun",
        *overrides,
        "hydra.sweep.dir=${out}",
        "hydra.output_subdir=null",
        "hydra/job_logging=none",
        "hydra/hydra_logging=none",
    ]
    try:
        app()
    finally:
        sys.argv = saved
    if failed:
        raise UserError(f"{len(failed)} of {len(codes)} multirun jobs failed: {', '.join(failed)}")
    return max(codes, default=0)
