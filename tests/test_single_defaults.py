"""One home per default: the dataclass schemas (spear_mm/*/config.py) hold every default; a YAML
file in spear_mm/conf writes only what it changes (docs/architecture.md, configs)."""

from __future__ import annotations

import dataclasses

import pytest
from omegaconf import OmegaConf

from spear_mm.analyze.config import AnalyzeConfig
from spear_mm.cli.hydra_app import CONF_DIR, compose
from spear_mm.eval.config import EvalConfig, SuiteConfig
from spear_mm.pipeline.config import RunConfig
from spear_mm.sweep.config import SweepConfig
from spear_mm.train.config import DataConfig, ModelConfig, TrainConfig, TrainerConfig

GROUPS = {"model": ModelConfig, "data": DataConfig, "trainer": TrainerConfig}
# Every Hydra verb (merge takes plain flags and a recipe file: it has no conf/<verb>.yaml).
VERBS = {
    "train": TrainConfig,
    "analyze": AnalyzeConfig,
    "sweep": SweepConfig,
    "eval": EvalConfig,
    "run": RunConfig,
}


def _defaults(schema) -> dict:
    out = {}
    for f in dataclasses.fields(schema):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            value = f.default_factory()
            out[f.name] = dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value
    return out


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _body(path) -> dict:
    data = OmegaConf.to_container(OmegaConf.load(path)) or {}
    data.pop("defaults", None)
    return data


def _restated(body: dict, reference: dict) -> list[str]:
    flat_ref = _flat(reference)
    return [k for k, v in _flat(body).items() if k in flat_ref and flat_ref[k] == v]


@pytest.mark.parametrize(
    "path", sorted(p for g in GROUPS for p in (CONF_DIR / g).glob("*.yaml")), ids=lambda p: p.stem
)
def test_group_options_write_only_what_differs_from_the_schema(path):
    schema = GROUPS[path.parent.name]
    assert _restated(_body(path), _defaults(schema)) == [], f"{path} restates schema defaults"


@pytest.mark.parametrize("path", sorted((CONF_DIR / "suite").glob("*.yaml")), ids=lambda p: p.stem)
def test_suite_options_write_only_what_differs_from_the_schema(path):
    ((name, body),) = _body(path).items()  # one suite per file, keyed by its name
    assert _restated(body, _defaults(SuiteConfig)) == [], f"{path} restates SuiteConfig defaults"


def test_every_hydra_verb_is_checked():
    assert {p.stem for p in CONF_DIR.glob("*.yaml")} == set(VERBS)


@pytest.mark.parametrize("verb", sorted(VERBS))
def test_verb_files_write_only_what_differs_from_the_schema(verb):
    assert _restated(_body(CONF_DIR / f"{verb}.yaml"), _defaults(VERBS[verb])) == []


@pytest.mark.parametrize("verb", sorted(VERBS))
def test_verb_files_name_their_schema(verb):
    """The schema is the first default: a key the YAML leaves out still exists (overridable)."""
    defaults = OmegaConf.to_container(OmegaConf.load(CONF_DIR / f"{verb}.yaml"))["defaults"]
    assert defaults[0] == f"{verb}_schema"


def test_the_check_catches_a_restated_default():
    assert _restated({"probe": {"seq_len": 256}, "top_k": 3}, _defaults(AnalyzeConfig)) == [
        "probe.seq_len"
    ]


def _base_overrides(path) -> list[str]:
    """The experiment's own defaults list as command-line overrides (its starting point)."""
    out = []
    for entry in OmegaConf.to_container(OmegaConf.load(path)).get("defaults", []):
        if isinstance(entry, str):
            if entry != "_self_":
                out.append(f"experiment={entry}")
        else:
            ((key, value),) = entry.items()
            out.append(f"{key.removeprefix('override /')}={value}")
    return out


@pytest.mark.parametrize(
    "path", sorted((CONF_DIR / "experiment").glob("*.yaml")), ids=lambda p: p.stem
)
def test_experiments_are_deltas(path):
    base = OmegaConf.to_container(compose("run", _base_overrides(path), RunConfig))
    assert _restated(_body(path), base) == [], f"{path} restates what its base already says"
