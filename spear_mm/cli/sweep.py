"""`spear-mm sweep base=DIR adapted=DIR analysis=DIR/analysis.json out=DIR [target_retention=0.9]`."""

from __future__ import annotations

from spear_mm.cli.hydra_app import run_verb
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
    doc = run_sweep(cfg)
    print(f"sweep: {len(doc['points'])} points -> {cfg.out}/sweep.json")
    print(f"verdict: {doc['verdict']['summary']}")
    if doc.get("solver"):
        print(f"solver: {doc['solver']['message']}")
    return 0


def main(argv: list[str]) -> int:
    return run_verb("sweep", argv, SweepConfig, _task, DESCRIPTION)
