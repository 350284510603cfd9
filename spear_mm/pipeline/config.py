"""Typed schema of `spear-mm run`: every default lives here or in the stages' schemas
(conf/run.yaml and conf/experiment/ write only what they change).

The study reuses each stage's own schema: `model`, `data`, `trainer` as in `spear-mm train`,
`analyze` and `sweep` as in their verbs (their `base`, `adapted`, `analysis` and `out` keys are
filled in by the pipeline from the stages before them, so leave them empty), and `compare`
for the final table.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from spear_mm.analyze.config import AnalyzeConfig
from spear_mm.errors import UserError
from spear_mm.eval.backends import LmEvalBackend
from spear_mm.eval.config import HeldoutConfig
from spear_mm.sweep.config import SweepConfig
from spear_mm.train.config import DataConfig, ModelConfig, TrainerConfig


@dataclass
class CompareConfig:
    """The report's table: every named model scored with the same probes (and MC suites)."""

    probe_tokens: int = 4096  # tokens per bits-per-byte probe (general, finance)
    seq_len: int = 256
    batch_size: int = 8
    # lm-eval tasks or suites behind the table's two accuracy columns (each column is the mean
    # of its tasks' primary scores): the bundled MMLU samples offline, real suites at scale.
    general_tasks: list[str] = field(default_factory=lambda: ["general_mc"])
    finance_tasks: list[str] = field(default_factory=lambda: ["finance_mc"])
    mc_limit: int = 100  # documents per task; 0 skips the accuracy columns
    autocast_bf16: bool | None = None  # probes in bf16 autocast (None: CUDA only), as sweep.probe
    doc_max_tokens: int | None = None  # tokens per document at most (null: no cap), as sweep.probe
    resamples: int = 2000  # bootstrap resamples behind every 95% interval of the table
    seed: int = 0  # seed of the bootstrap draws (the same seed gives the same intervals)
    # Re-score each sweep family's chosen point and the uniform line on test-role text, for the
    # per-family verdict against uniform (spear_mm.pipeline.families; one probe pass per point)
    family_check: bool = True
    # lm-eval's multi-GPU modes for the accuracy columns (spear_mm/eval/backends.py)
    lm_eval: LmEvalBackend = field(default_factory=LmEvalBackend)
    heldout: HeldoutConfig = field(default_factory=HeldoutConfig)  # as analyze.probe.heldout

    def __post_init__(self) -> None:
        if self.probe_tokens < 64:
            raise UserError(f"compare.probe_tokens={self.probe_tokens}: must be >= 64")
        if self.resamples < 100:
            raise UserError(f"compare.resamples={self.resamples}: use >= 100 (default 2000)")
        if self.mc_limit < 0:
            raise UserError(f"compare.mc_limit={self.mc_limit}: must be >= 0 (0 = no MC)")


def _stage_default(cls):
    return field(default_factory=lambda: cls(base="", adapted="", out=""))


@dataclass
class RunConfig:
    """`spear-mm run`: the whole study in one run folder (`out`)."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    analyze: AnalyzeConfig = _stage_default(AnalyzeConfig)
    sweep: SweepConfig = _stage_default(SweepConfig)
    compare: CompareConfig = field(default_factory=CompareConfig)
    out: str = "runs/study"
    seed: int = 0
    # Several CPT seeds: one study per seed in out/seed_<s>, then out/seeds_summary.{json,md}
    # (spear_mm.pipeline.seeds); empty = one study with `seed`.
    seeds: list[int] = field(default_factory=list)
    # Replay baselines: one more CPT per general-replay ratio (e.g. [0.1, 0.25]: 10% and 25% of
    # the training tokens from data.general), same seed, steps and data otherwise; each is a row
    # of the report's table and a point of its trade-off plot (docs/metrics.md, "Replay").
    replay: list[float] = field(default_factory=list)
    # With seeds=[...]: the seeds that also train the replay baselines (null: every seed).
    replay_seeds: list[int] | None = None
    title: str = "SPEAR-MM study"
    # The probes' held-out text for every stage (eval.config.HeldoutConfig): set it here, once;
    # the CPT's own corpora (data.domain / data.general, when files or folders) are excluded.
    heldout: HeldoutConfig = field(default_factory=HeldoutConfig)

    def __post_init__(self) -> None:
        self._share_heldout()
        for section in ("analyze", "sweep"):
            sub = getattr(self, section)
            for key in ("base", "adapted", "out"):
                if getattr(sub, key):
                    raise UserError(
                        f"{section}.{key} in run config: the pipeline sets it from the earlier "
                        f"stages; remove {section}.{key}=..."
                    )
        if len(set(self.seeds)) != len(self.seeds):
            raise UserError(
                f"seeds={list(self.seeds)} in run config: a seed repeats; list each once"
            )
        for ratio in self.replay:
            if not 0.0 < ratio < 1.0:
                raise UserError(
                    f"replay={list(self.replay)} in run config: {ratio} is not a share of the "
                    "training tokens in (0, 1); e.g. replay=[0.1,0.25]"
                )
        if len(set(self.replay)) != len(self.replay):
            raise UserError(f"replay={list(self.replay)} in run config: a ratio repeats")
        stray = sorted(set(self.replay_seeds or []) - set(self.seeds))
        if stray and self.seeds:
            raise UserError(
                f"replay_seeds={list(self.replay_seeds)} in run config: seed(s) {stray} are not "
                f"in seeds={list(self.seeds)}; list seeds the study runs"
            )
        if self.replay and not self.data.general:
            raise UserError(
                "replay in run config: needs general text to replay, but data.general is null; "
                "set data.general=general_train or remove replay"
            )
        if not str(self.out).strip():
            raise UserError("out in run config: is empty; set out=runs/my-study")

    def _share_heldout(self) -> None:
        """One held-out setting for analyze, sweep and compare (and the training text excluded)."""
        default, own = HeldoutConfig(), self.heldout
        stages = {
            "analyze.probe.heldout": self.analyze.probe,
            "sweep.probe.heldout": self.sweep.probe,
            "compare.heldout": self.compare,
        }
        for key, holder in stages.items():
            if holder.heldout not in (default, own):
                raise UserError(
                    f"{key} in run config: the study sets the held-out text once for every "
                    f"stage; use heldout.{{general,finance,exclude}}=... instead of {key}"
                )
        train = [s for s in (self.data.domain, self.data.general) if s and Path(s).exists()]
        exclude = list(own.exclude) + [s for s in train if s not in own.exclude]
        self.heldout = dataclasses.replace(own, exclude=exclude)
        for holder in stages.values():
            holder.heldout = self.heldout


def register() -> None:
    """Register the schema with Hydra's ConfigStore (name `run_schema`; idempotent)."""
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name="run_schema", node=RunConfig)


register()  # importing the schema makes `run_schema` available to conf/run.yaml
