"""`spear-mm analyze base=DIR adapted=DIR out=DIR [ablation=true ...]` (Hydra overrides)."""

from __future__ import annotations

from spear_mm.analyze.config import AnalyzeConfig
from spear_mm.cli.hydra_app import run_verb

DESCRIPTION = (
    "Score every layer of a continually pretrained model against its base from the weights alone\n"
    "(relative drift, cosine, Spectrum SNR, SWCI, SVDR, top-direction and output-change proxies),\n"
    "optionally validate the ranking with a per-layer restore ablation (ablation=true), and write\n"
    "analysis.json, layer_impact.png, recipes/{conservative,balanced,aggressive}.yaml and\n"
    "freeze/<policy>.yaml into out. See docs/analyzer.md."
)


def _task(cfg: AnalyzeConfig) -> int:
    from spear_mm.analyze.run import analyze

    analyze(cfg)
    return 0


def main(argv: list[str]) -> int:
    return run_verb("analyze", argv, AnalyzeConfig, _task, DESCRIPTION)
