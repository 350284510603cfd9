"""Typed schema of `spear-mm sweep`: every default lives here (conf/sweep.yaml only names it;
docs in docs/sweeps.md)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING

from spear_mm.errors import UserError
from spear_mm.eval.backends import LmEvalBackend
from spear_mm.eval.config import ProbeSettings, SuiteConfig
from spear_mm.sweep.schedule import DEFAULT_KIND_GAMMA, FAMILIES, KIND_GROUPS, NONLAYER_POLICIES


@dataclass
class LearnSettings:
    """How a point of the `learned` family is fitted (spear_mm/sweep/learned.py, docs/sweeps.md)."""

    knots: int = 4  # depth knots per in-block group: 3·knots + 2 parameters
    steps: int = 16  # Adam steps per fit
    lr: float = 0.3  # Adam step size on the logits
    penalty: float = 10.0  # μ: nats of domain NLL per nat of general NLL over the budget
    # Windows of each probe per step (its minibatch): 16 steps x 1 window of 256 tokens of each
    # probe, forward and backward, measured at about the cost of 10 sweep points with 2048-token
    # probes (scripts/bench_learned.py, docs/benchmarks.md).
    windows_per_step: int = 1
    seed: int = 0

    def __post_init__(self) -> None:
        if not 1 <= self.knots <= 20:
            raise UserError(f"sweep learn.knots={self.knots}: use 1..20 (3·knots + 2 parameters)")
        for key in ("steps", "windows_per_step"):
            if getattr(self, key) < 1:
                raise UserError(f"sweep learn.{key}={getattr(self, key)}: must be >= 1")
        for key in ("lr", "penalty"):
            if not getattr(self, key) > 0:
                raise UserError(f"sweep learn.{key}={getattr(self, key)}: must be > 0")


DEFAULT_KNOBS = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.7, 1.0]
MIN_POINTS = 7


@dataclass
class SweepConfig:
    base: str = MISSING
    adapted: str = MISSING
    out: str = MISSING
    analysis: str | None = None  # analysis.json (layer_ranking); needed by analyzer and topk
    replay: str | None = None  # a replay-trained checkpoint, scored as a baseline
    # Every family but `learned` (a gradient fit per point: name it to sweep it).
    families: list[str] = field(default_factory=lambda: [f for f in FAMILIES if f != "learned"])
    knobs: list[float] = field(default_factory=lambda: list(DEFAULT_KNOBS))
    gamma_spread: float = 3.0  # κ: exponents a^γ_i span 1/κ .. κ over the ranking
    nonlayer: str = "mean"  # restore of embeddings / final norm / lm_head: mean | knob | last
    kind_gamma: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_KIND_GAMMA))
    kind_depth_spread: float = 1.0  # kinds family: κ_d > 1 restores earlier layers more per kind
    learn: LearnSettings = field(default_factory=LearnSettings)  # the learned family's fit
    method: str = "lerp"  # merge kernel of every point: lerp | slerp | slerp_rowwise
    target_retention: float | None = None  # general retention target (solver)
    target_recovered: float | None = None  # forgetting-recovered target (solver)
    refine_steps: int = 4  # bisection steps per family around the target crossing
    materialize: bool = False  # write the selected recipe's model into out/merged
    force: bool = False  # replace an existing out/merged
    probe: ProbeSettings = field(default_factory=ProbeSettings)  # scored at every point
    # lm-eval suites scored at every point too (slow): the `suite/` group, as in `spear-mm eval`
    suite: dict[str, SuiteConfig] = field(default_factory=dict)
    suite_limit: Any = None  # documents per suite task
    resamples: int = 2000  # bootstrap resamples behind the verdict's 95% intervals
    axis: str = "auto"  # y axis of frontier.png: retention | recovered | auto
    dtype: str = "float32"  # dtype the model is held in while sweeping
    threads: int | None = None  # torch.set_num_threads for this run; None = torch's default
    seed: int = 0
    plot: bool = True
    # Fan-out (spear_mm/sweep/fanout.py, docs/sweeps.md): `-m worker=0,...,N-1 workers=N` with a
    # Hydra launcher runs N workers, each scoring every N-th point into out/worker-K/shard.json.
    workers: int = 1  # how many workers share the points (1 = the one-process sweep)
    worker: int | None = None  # this worker's index, 0..workers-1 (with -m: worker=0,1,...)
    finish: bool = False  # assemble out/worker-*/shard.json into out's sweep.json (by hand)
    # How the suites' lm-eval passes run: the in-memory HF model (default) or lm-eval's own
    # multi-GPU modes (hf_parallel, accelerate, vllm): spear_mm/eval/backends.py, docs/eval.md.
    lm_eval: LmEvalBackend = field(default_factory=LmEvalBackend)
    # Device the model is held on while sweeping: cpu | cuda | cuda:N | auto (auto: GPU
    # worker % count when CUDA is there, so fanned-out workers on one node take one GPU each).
    device: str = "cpu"

    def __post_init__(self) -> None:  # noqa: C901 - a flat list of checks
        bad = [f for f in self.families if f not in FAMILIES]
        if bad or not self.families:
            raise UserError(
                f"sweep families={list(self.families)}: choose from {', '.join(FAMILIES)}"
            )
        if any(not 0.0 <= float(k) <= 1.0 for k in self.knobs):
            raise UserError(f"sweep knobs={list(self.knobs)}: every knob must lie in [0, 1]")
        if len(set(self.knobs) | {0.0, 1.0}) < MIN_POINTS:
            raise UserError(
                f"sweep knobs={list(self.knobs)}: give at least {MIN_POINTS} distinct knob points "
                "(0 and 1 are always added)"
            )
        if self.gamma_spread < 1.0:
            raise UserError(f"sweep gamma_spread={self.gamma_spread}: must be >= 1 (1 = uniform)")
        if set(self.kind_gamma) != set(KIND_GROUPS) or any(
            float(g) <= 0 for g in self.kind_gamma.values()
        ):
            raise UserError(
                f"sweep kind_gamma={dict(self.kind_gamma)}: give a positive exponent for each of "
                f"{', '.join(KIND_GROUPS)} (1 = like uniform, < 1 restored earlier, > 1 later)"
            )
        if self.kind_depth_spread < 1.0:
            raise UserError(
                f"sweep kind_depth_spread={self.kind_depth_spread}: must be >= 1 (1 = flat in depth)"
            )
        if self.nonlayer not in NONLAYER_POLICIES:
            raise UserError(
                f"sweep nonlayer={self.nonlayer!r}: choose {', '.join(NONLAYER_POLICIES)}"
            )
        if self.method not in ("lerp", "slerp", "slerp_rowwise"):
            raise UserError(f"sweep method={self.method!r}: choose lerp, slerp or slerp_rowwise")
        if self.target_retention is not None and self.target_recovered is not None:
            raise UserError("sweep: give target_retention or target_recovered, not both")
        if self.refine_steps < 0:
            raise UserError(f"sweep refine_steps={self.refine_steps}: must be >= 0")
        if self.materialize and self.target() is None:
            raise UserError(
                "sweep materialize=true needs a target (target_retention=... or "
                "target_recovered=...)"
            )
        if self.resamples < 100:
            raise UserError(f"sweep resamples={self.resamples}: use >= 100 (default 2000)")
        if self.axis not in ("auto", "retention", "recovered"):
            raise UserError(f"sweep axis={self.axis!r}: choose auto, retention or recovered")
        check_fanout(self)

    def target(self) -> tuple[str, float] | None:
        """(metric, value) of the solver's target, or None when no target is set."""
        if self.target_retention is not None:
            return "retention", float(self.target_retention)
        if self.target_recovered is not None:
            return "recovered", float(self.target_recovered)
        return None


def register() -> None:
    """Register the schema with Hydra's ConfigStore (name `sweep_schema`; idempotent)."""
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name="sweep_schema", node=SweepConfig)


register()  # importing the schema makes `sweep_schema` available to conf/sweep.yaml


def check_fanout(cfg) -> None:
    """workers / worker / finish agree (docs/sweeps.md, "Fanning out")."""
    if cfg.workers < 1:
        raise UserError(f"sweep workers={cfg.workers}: must be >= 1 (1 = one process)")
    if cfg.worker is not None and not 0 <= cfg.worker < cfg.workers:
        raise UserError(
            f"sweep worker={cfg.worker}: must lie in 0..workers-1 with workers={cfg.workers}; "
            "set workers=N and sweep worker=0,...,N-1 with -m"
        )
    if cfg.workers > 1 and cfg.worker is None and not cfg.finish:
        raise UserError(
            f"sweep workers={cfg.workers} without worker=: run the workers with -m "
            f"worker=0,...,{cfg.workers - 1} (docs/sweeps.md), or finish=true to assemble them"
        )
    if cfg.finish and (cfg.worker is not None or cfg.workers < 2):
        raise UserError(
            "sweep finish=true assembles the shards of workers=N (N >= 2) into out=; give "
            "workers=N and no worker="
        )
