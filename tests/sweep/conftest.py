"""Sweep fixtures: the tiny pair with an analysis.json, and a composed sweep config."""

from __future__ import annotations

import json

import pytest


@pytest.fixture(scope="module")
def analysis(tiny_pair, tmp_path_factory):
    path = tmp_path_factory.mktemp("analysis") / "analysis.json"
    path.write_text(
        json.dumps(
            {
                "schema_version": 1,
                "layer_ranking": [2, 0, 3, 1],
                "combined_score": [0.5, 0.1, 0.9, 0.3],
            }
        )  # fmt: skip
    )
    return path


@pytest.fixture()
def sweep_cfg(tiny_pair, analysis, tmp_path):
    from omegaconf import OmegaConf

    from spear_mm.cli.hydra_app import compose
    from spear_mm.sweep.config import SweepConfig

    def make(*overrides):
        base, adapted = tiny_pair
        args = [
            f"base={base}",
            f"adapted={adapted}",
            f"analysis={analysis}",
            f"out={tmp_path / 'out'}",
            "probe.max_tokens=128",
            *overrides,
        ]
        return OmegaConf.to_object(compose("sweep", args, SweepConfig))  # as hydra_app hands it

    return make
