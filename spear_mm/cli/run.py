"""`spear-mm run experiment=demo`: the whole study in one command (see docs/quickstart.md)."""

from __future__ import annotations

from spear_mm.cli.hydra_app import run_verb

DESCRIPTION = (
    "The whole SPEAR-MM study in one run folder (out=...): continual pretraining of the base on\n"
    "the domain corpus -> layer analysis (weight signals + per-layer ablation) -> trade-off sweep\n"
    "with the uniform baseline -> the recipe that meets the target -> the merged model ->\n"
    "report.md / report.html. Stages are cached by their inputs: a re-run reuses finished\n"
    "stages, a changed target recomputes only the sweep and what follows.\n"
    "Experiments: experiment=demo (SmolLM2-135M, <= 15 min on 2 CPU cores), demo_full (the demo\n"
    "at full CPT batch, 8192-token probes, every family), study (the testbed: annealed CPT,\n"
    "3 seeds, replay baselines, the gate; ~2 h), tiny (a random 4-layer model, seconds),\n"
    "llama31_8b_finance_study (GPUs). Own held-out text: heldout.finance=FILE; replay\n"
    "baselines: replay=[0.1,0.25]; several CPT seeds: seeds=[0,1,2]."
)


def _task(cfg) -> int:
    from spear_mm.pipeline.study import run_study

    return run_study(cfg)


def main(argv: list[str]) -> int:
    from spear_mm.pipeline.config import RunConfig, register

    register()
    return run_verb("run", argv, RunConfig, _task, DESCRIPTION)
