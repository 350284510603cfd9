"""Typed schema of `spear-mm analyze`: every default lives here (conf/analyze.yaml only names it)."""

from __future__ import annotations

from dataclasses import dataclass, field

from omegaconf import MISSING

from spear_mm.errors import UserError
from spear_mm.eval.config import ProbeSettings

# The probe whose per-layer harm is the analyzer's target: the ablation's truth ranking, the fit's
# target, the selections and a prior's profile all read it (general_probe), and the domain probe
# adds gain kept to the selections when present.
GENERAL_PROBE, DOMAIN_PROBE = "general", "finance"


def general_probe(names) -> str:
    """The general probe of ``probe.names`` — the one place that picks it; UserError when absent."""
    if GENERAL_PROBE not in list(names):
        raise UserError(
            f"analyze probe.names={list(names)} has no '{GENERAL_PROBE}' probe, which ablation=true "
            f"needs (its harm ranks the layers for the ablation, fit and selection); pass "
            f"'probe.names=[{GENERAL_PROBE},{DOMAIN_PROBE}]' or drop ablation=true"
        )
    return GENERAL_PROBE


@dataclass
class ProbeConfig(ProbeSettings):
    """Fast bits-per-byte probes used by the ablation, and which probe texts to score."""

    names: list[str] = field(default_factory=lambda: ["general", "finance"])


@dataclass
class AnalyzeConfig:
    base: str = MISSING
    adapted: str = MISSING
    out: str = MISSING
    device: str = "auto"  # SVDs and ablation: auto = cuda when available
    svd_mode: str = "exact"  # exact (fp32 SVD) | fast (Gram eigh: spectra + top directions)
    top_k: int = 16  # base singular directions used by top_drift (capped by the MP count)
    seed: int = 0
    score_spec: str | None = None  # JSON spec (or an analysis.json) fitted on another study
    fit: bool = False  # fit a spec on this study's ablation (reported as in-sample)
    # analysis.json of another study of the same base with an ablation (a pilot CPT run): its
    # per-layer general harm becomes the `prior` feature, validated like depth (docs/analyzer.md)
    prior: str | None = None
    ablation: bool = False  # per-layer restore ablation with the probes (the ground truth)
    ablation_cache: bool = True  # replay activations below the restored layer
    select_k: list[int] = field(default_factory=lambda: [3, 6, 10])
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    lm_eval_tasks: list[str] = field(default_factory=list)  # optional, with ablation=true
    lm_eval_limit: float | None = None  # documents per task (a fraction below 1 = that share)
    dtype: str = "float32"  # dtype the adapted model is loaded in for the ablation
    threads: int | None = None  # torch.set_num_threads for this run; None leaves torch's default
    plot: bool = True

    def __post_init__(self) -> None:
        if self.svd_mode not in ("exact", "fast"):
            raise UserError(f"analyze svd_mode={self.svd_mode!r}: choose exact or fast")
        if self.top_k < 1:
            raise UserError(f"analyze top_k={self.top_k}: must be >= 1")
        if any(k < 1 for k in self.select_k):
            raise UserError(f"analyze select_k={self.select_k}: every k must be >= 1")
        if self.ablation:
            general_probe(self.probe.names)
        if self.fit and not self.ablation:
            raise UserError("analyze fit=true needs ablation=true (the fit targets its harm)")


def register() -> None:
    """Register the schema with Hydra's ConfigStore (name `analyze_schema`; idempotent)."""
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name="analyze_schema", node=AnalyzeConfig)


register()  # importing the schema makes `analyze_schema` available to conf/analyze.yaml
