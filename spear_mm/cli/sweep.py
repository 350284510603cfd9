"""`spear-mm sweep base=DIR adapted=DIR analysis=DIR/analysis.json out=DIR [target_retention=0.9]`."""

from __future__ import annotations

import time
from pathlib import Path

from spear_mm.cli.hydra_app import run_verb
from spear_mm.errors import UserError
from spear_mm.sweep.config import SweepConfig

DESCRIPTION = (
    "Trade-off sweep between general retention and domain gain kept. One knob a in [0, 1]\n"
    "(0 = adapted, 1 = base) per recipe family — uniform (WiSE-FT), depth, analyzer (per-layer t\n"
    "from analysis.json), topk (whole layers) — every point a recipe merged in memory and scored\n"
    "with the fast probes. Writes sweep.csv, sweep.json (scores, timings, Pareto frontier, the\n"
    "layer-aware vs uniform verdict), recipes/, frontier.png; with target_retention=... or\n"
    "target_recovered=... also selected_recipe.yaml (and out/merged with materialize=true).\n"
    "See docs/sweeps.md."
)


def _task(cfg: SweepConfig) -> int:
    import logging

    from spear_mm.sweep.finish import run_sweep

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if cfg.finish or cfg.worker is not None:  # fanned out: docs/sweeps.md, "Fanning out"
        from spear_mm.sweep import fanout

        doc = (
            fanout.finish(cfg)
            if cfg.finish
            else fanout.finish_if_complete(cfg, fanout.run_worker(cfg))
        )
        if doc is None:
            return 0  # this worker's shard is written; the last worker assembles the sweep
        out = cfg.out if cfg.finish else Path(cfg.out).parent
    else:
        doc, out = run_sweep(cfg), cfg.out
    print(f"sweep: {len(doc['points'])} points -> {out}/sweep.json")
    print(f"verdict: {doc['verdict']['summary']}")
    if doc.get("solver"):
        print(f"solver: {doc['solver']['message']}")
    return 0


def main(argv: list[str]) -> int:
    started = time.time()
    code = run_verb("sweep", argv, SweepConfig, _task, DESCRIPTION)
    if any(a in ("-m", "--multirun") for a in argv) and any(a.startswith("worker=") for a in argv):
        _check_fanout_finished(argv, started)
    return code


def _check_fanout_finished(argv: list[str], started: float) -> None:
    """A launcher that runs the jobs in other processes (joblib, submitit) does not hand their
    exit codes back: the fan-out succeeded iff the last worker assembled out/sweep.json."""
    given = next((a.partition("=")[2] for a in reversed(argv) if a.startswith("out=")), None)
    if given is None:
        return  # the run itself refused the missing out=
    out = Path(given)
    done = out / "sweep.json"
    if done.is_file() and done.stat().st_mtime >= started:
        return
    shards = out.glob("worker-*/shard.json")
    have = sorted(p.parent.name for p in shards if p.stat().st_mtime >= started)
    raise UserError(
        f"sweep fan-out into {out}: no sweep.json assembled (fresh shards in: "
        f"{', '.join(have) or 'none'}); see the workers' errors above, re-run the missing "
        "workers with -m, then `spear-mm sweep ... workers=N finish=true`"
    )
