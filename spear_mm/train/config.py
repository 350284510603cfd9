"""Typed schemas of `spear-mm train` (Hydra structured configs) and their value checks.

Hydra/OmegaConf check types and unknown keys against these dataclasses; the `__post_init__`
checks (run when `spear_mm.cli.hydra_app` turns the composed config into the dataclass) check
values (ranges, enumerations, combinations) and raise a one-line `UserError` that names the key
and the fix. `ModelConfig` and the `model/` group are shared with the other verbs (eval, pipeline).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from spear_mm.errors import UserError

DTYPES = ("float32", "bfloat16", "float16")
PRECISIONS = ("auto", "bf16", "fp16", "no")
REMAINDERS = ("drop", "pad")
TRACKERS = ("tensorboard", "wandb")


@dataclass
class ModelConfig:
    """Which model to load and how.

    `name` is a local folder, a Hugging Face hub id or a built-in name (`smollm2-135m`,
    `tiny-llama`), resolved by `spear_mm.io.sources.resolve_model`. `dtype` is the dtype of the
    weights held in memory (the master copy when training; mixed precision is a trainer setting).
    `attn_implementation=auto` lets transformers pick per architecture (SDPA where supported,
    else eager); an explicit kernel the architecture refuses falls back to eager with a note.
    """

    name: str = MISSING  # set by the model/ group's preset, or model=FOLDER|HUB_ID
    dtype: str = "float32"
    trust_remote_code: bool = False
    allow_pickle: bool = False
    attn_implementation: str = "auto"  # auto | sdpa | eager | flash_attention_2 | ...

    def __post_init__(self) -> None:
        validate_model(self)


@dataclass
class DataConfig:
    """The token stream: a domain corpus, optional general replay, packing and validation.

    `domain` / `general` are built-in corpus names (`finance_train`, `general_train`), text/jsonl
    files or folders, or Hugging Face dataset names. `general` serves replay (`replay_ratio` of
    the training tokens) and the general validation loss; null turns both off.
    """

    domain: str = "finance_train"
    general: str | None = "general_train"
    replay_ratio: float = 0.0  # e.g. 0.25: a quarter of the training tokens from general text
    seq_len: int = 128
    val_fraction: float = 0.05
    val_max_blocks: int = 32
    remainder: str = "drop"  # drop | pad (docs/train.md, packing)
    text_field: str = "text"
    hf_config: str | None = None
    hf_split: str = "train"
    bos_token: str | None = None  # null = the model family's rule (docs/train.md); '' = none
    eos_token: str | None = None

    def __post_init__(self) -> None:
        validate_data(self)


@dataclass
class TrainerConfig:
    """Optimisation, precision, freezing, checkpoints and logging."""

    max_steps: int = 0  # > 0 wins over max_tokens and epochs
    max_tokens: int = 0  # > 0: ceil(max_tokens / tokens per step) steps
    epochs: float = 1.0  # passes over the domain stream when neither is set
    batch_size: int = 8  # blocks per micro-batch per process
    grad_accum: int = 1
    lr: float = 1e-4
    min_lr_ratio: float = 0.1  # cosine ends at lr * min_lr_ratio
    warmup_steps: int = 0
    weight_decay: float = 0.1  # matrices only
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    max_grad_norm: float = 1.0  # 0 = no clipping
    mixed_precision: str = "auto"  # auto | bf16 | fp16 | no (auto = bf16 where the hardware has it)
    gradient_checkpointing: bool = False
    freeze: list[str] = field(default_factory=list)  # regexes (re.search on tensor names)
    freeze_plan: str | None = None  # YAML/JSON plan file (docs/train.md)
    eval_every: int = 0  # 0 = before training and at the end only
    eval_at_start: bool = True
    save_every: int = 0  # 0 = only out/final
    keep_train_state: int = 1  # checkpoints that keep their resume state (weights always kept)
    save_dtype: str | None = None  # null = the model's dtype
    log_every: int = 1
    progress: bool = True
    report_to: list[str] = field(default_factory=list)  # [tensorboard] and/or [wandb]
    num_threads: int = 0  # 0 = torch's default

    def __post_init__(self) -> None:
        validate_trainer(self)


@dataclass
class TrainConfig:
    """`spear-mm train`: model + data + trainer, the run folder, the seed and resume policy.

    `resume`: `auto` continues from the last complete checkpoint under `out` (a fresh start when
    there is none), `never` refuses an `out` that already holds checkpoints, anything else is the
    path of a checkpoint folder (`.../checkpoints/step-N`) to continue from.
    """

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    out: str = "runs/train"
    seed: int = 0
    # auto: continue from the last complete checkpoint under `out` (fresh start if none);
    # never: refuse an `out` that holds checkpoints; or a path to out/checkpoints/step-N
    resume: str = "auto"

    def __post_init__(self) -> None:
        validate(self)


def register_configs() -> None:
    """Register the schemas with Hydra's ConfigStore (idempotent)."""
    cs = ConfigStore.instance()
    cs.store(name="train_schema", node=TrainConfig)
    cs.store(group="model", name="model_schema", node=ModelConfig)
    cs.store(group="data", name="data_schema", node=DataConfig)
    cs.store(group="trainer", name="trainer_schema", node=TrainerConfig)


def _bad(key: str, problem: str, fix: str) -> UserError:
    return UserError(f"{key} in train config: {problem}; {fix}")


def _choice(key: str, value: object, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise _bad(key, f"{value!r} is not one of {', '.join(allowed)}", f"set {key}={allowed[0]}")


def _positive(key: str, value: float, *, allow_zero: bool = False) -> None:
    if value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise _bad(key, f"must be {bound}, got {value}", f"set {key} to a value {bound}")


def validate_model(model: ModelConfig, prefix: str = "model") -> None:
    """Check the model section (shared with other verbs)."""
    if not str(model.name).strip():
        raise _bad(f"{prefix}.name", "is empty", f"set {prefix}.name=smollm2-135m or a folder")
    _choice(f"{prefix}.dtype", model.dtype, DTYPES)


def validate_data(data: DataConfig) -> None:
    """Check the data section's values."""
    if not 0.0 <= data.replay_ratio < 1.0:
        raise _bad(
            "data.replay_ratio",
            f"must be in [0, 1), got {data.replay_ratio}",
            "set data.replay_ratio=0.25 (a quarter of the tokens from general text)",
        )
    if data.replay_ratio > 0 and not data.general:
        raise _bad(
            "data.general",
            "is null but data.replay_ratio > 0",
            "set data.general=general_train or data.replay_ratio=0",
        )
    if data.seq_len < 8:
        raise _bad("data.seq_len", f"must be >= 8, got {data.seq_len}", "set data.seq_len=128")
    if not 0.0 < data.val_fraction < 0.5:
        raise _bad(
            "data.val_fraction",
            f"must be in (0, 0.5), got {data.val_fraction}",
            "set data.val_fraction=0.05",
        )
    _positive("data.val_max_blocks", data.val_max_blocks)
    _choice("data.remainder", data.remainder, REMAINDERS)


def validate_trainer(tr: TrainerConfig) -> None:
    """Check the trainer section's values."""
    for key in (
        "max_steps",
        "max_tokens",
        "warmup_steps",
        "eval_every",
        "save_every",
        "num_threads",
        "weight_decay",
        "max_grad_norm",
    ):
        _positive(f"trainer.{key}", getattr(tr, key), allow_zero=True)
    for key in ("batch_size", "grad_accum", "lr", "eps", "log_every", "keep_train_state"):
        _positive(f"trainer.{key}", getattr(tr, key))
    if tr.max_steps == 0 and tr.max_tokens == 0 and tr.epochs <= 0:
        raise _bad(
            "trainer.max_steps",
            "no length given (max_steps, max_tokens and epochs are 0)",
            "set trainer.max_steps=100",
        )
    if not 0.0 <= tr.min_lr_ratio <= 1.0:
        raise _bad(
            "trainer.min_lr_ratio",
            f"must be in [0, 1], got {tr.min_lr_ratio}",
            "set trainer.min_lr_ratio=0.1",
        )
    for key in ("beta1", "beta2"):
        if not 0.0 <= getattr(tr, key) < 1.0:
            raise _bad(
                f"trainer.{key}",
                f"must be in [0, 1), got {getattr(tr, key)}",
                f"set trainer.{key}=0.9",
            )
    _choice("trainer.mixed_precision", tr.mixed_precision, PRECISIONS)
    if tr.save_dtype is not None:
        _choice("trainer.save_dtype", tr.save_dtype, DTYPES)
    for name in tr.report_to:
        _choice("trainer.report_to", name, TRACKERS)


def validate(cfg: TrainConfig) -> None:
    """Check every value of a composed train config; raise a one-line `UserError` naming the key."""
    validate_model(cfg.model)
    validate_data(cfg.data)
    validate_trainer(cfg.trainer)
    if not str(cfg.out).strip():
        raise _bad("out", "is empty", "set out=runs/my-run")
    if not str(cfg.resume).strip():
        raise _bad("resume", "is empty", "set resume=auto, resume=never or a checkpoint folder")


register_configs()  # importing the schema makes `train_schema` available to Hydra's defaults
