"""Typed schema of `spear-mm eval` and its value checks: every default lives here (conf/eval.yaml
only changes `out` and picks the groups).

The `model` section is train's `ModelConfig` (the shared `model/` group); `suite` is filled by
the `suite/` group (one entry per selected suite). `__post_init__` raises a one-line
`UserError` naming the key and the fix.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spear_mm.errors import UserError
from spear_mm.train.config import ModelConfig

PROBE_NAMES = ("general", "finance")  # the two bits-per-byte probes every stage scores


@dataclass
class HeldoutConfig:
    """The held-out text of the two probes: a bundled corpus name, or a file / folder of your
    own (.jsonl with a `text` field and optional `id` / `source`, .txt files, ...; see
    spear_mm.io.textfiles). Either way it is split into the three text roles (calibration,
    selection, test; spear_mm.io.roles), and documents overlapping the bundled training corpora
    or any corpus in `exclude` (the CPT's training text; `spear-mm run` adds data.domain and
    data.general) are dropped from every role."""

    general: str = "general_heldout"
    finance: str = "finance_heldout"  # the domain probe, whatever the domain
    exclude: list[str] = field(default_factory=list)

    def corpus(self, probe: str) -> str:
        if probe not in PROBE_NAMES:
            raise UserError(f"probe '{probe}' is unknown; choose one of {', '.join(PROBE_NAMES)}")
        return getattr(self, probe)


@dataclass
class ProbeSettings:
    """Fast bits-per-byte probe settings (see spear_mm.eval.probe), shared by analyze and sweep."""

    max_tokens: int = 4096
    seq_len: int = 256
    batch_size: int = 8
    autocast_bf16: bool | None = None
    # Tokens scored per document at most (its head; null = no cap): spreads the budget over
    # more documents, the units the 95% intervals resample (docs/metrics.md).
    doc_max_tokens: int | None = None
    heldout: HeldoutConfig = field(default_factory=HeldoutConfig)  # which text the probes read


@dataclass
class SuiteConfig:
    """One named suite: lm-eval task names, and whether they run without the network."""

    tasks: list[str] = field(default_factory=list)
    description: str = ""
    offline: bool = True


@dataclass
class EvalConfig:
    """`spear-mm eval`: which model, which suites/tasks, how many documents, where results go."""

    model: ModelConfig = field(default_factory=ModelConfig)
    suite: dict[str, SuiteConfig] = field(default_factory=dict)
    tasks: list[str] = field(default_factory=list)
    limit: Any = None  # documents per task (int), a fraction below 1, or null for all
    batch_size: Any = "auto"
    max_length: int | None = None
    device: str = "auto"
    seed: int = 0
    cache_dir: str | None = None
    use_cache: bool = True
    data_files: dict[str, str] = field(default_factory=dict)
    include_path: list[str] = field(default_factory=list)  # folders of the user's lm-eval tasks
    out: str | None = None

    def __post_init__(self) -> None:
        if not self.suite and not self.tasks:
            raise UserError(
                "suite and tasks in eval config: both empty; "
                "set suite=general_ppl (see `spear-mm eval --help`) or tasks=[mmlu]"
            )
        if self.limit is not None:
            try:
                ok = float(self.limit) > 0
            except (TypeError, ValueError):
                ok = False
            if not ok:
                raise UserError(
                    f"limit in eval config: {self.limit!r} is not a positive number; "
                    "set limit=50 (documents per task), limit=0.1 (a share) or limit=null"
                )
        if self.batch_size != "auto" and not str(self.batch_size).isdigit():
            raise UserError(
                f"batch_size in eval config: {self.batch_size!r}; set batch_size=auto or 8"
            )
        for folder in self.include_path:
            if not Path(folder).is_dir():
                raise UserError(
                    f"include_path in eval config: {folder!r} is not a folder; give folders "
                    "of lm-eval task YAMLs, e.g. include_path=[/abs/my_tasks]"
                )
        if self.max_length is not None and self.max_length < 2:
            raise UserError(f"max_length in eval config: {self.max_length} < 2; set null or 2048")

    def task_names(self) -> list[str]:
        """Suite tasks in suite order, then the extra `tasks`, duplicates dropped."""
        out: list[str] = []
        for suite in self.suite.values():
            out += [t for t in suite.tasks if t not in out]
        return out + [t for t in self.tasks if t not in out]


def register() -> None:
    """Register the schema with Hydra's ConfigStore (name `eval_schema`; idempotent)."""
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name="eval_schema", node=EvalConfig)


register()  # importing the schema makes `eval_schema` available to conf/eval.yaml
