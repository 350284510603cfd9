"""Setting up a run: precision, the accelerator, the model, the run length and batch positions."""

from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from spear_mm.errors import UserError
from spear_mm.train.config import ModelConfig, TrainConfig


def cpu_has_bf16() -> bool:
    """True when the CPU computes bf16 natively (AVX512-BF16 or AMX); emulated bf16 is slower."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(name: str) -> str:
    """`auto` → `bf16` where the hardware has it (CUDA bf16, or a CPU with native bf16), else `no`.

    An explicit `bf16` on a CPU without native bf16 is honoured with a warning: such CPUs emulate
    it, and a bf16 matmul measured ~60x slower than fp32 on an AVX2-only EPYC (scripts/bench_bf16.py)."""
    if name == "bf16" and not torch.cuda.is_available() and not cpu_has_bf16():
        print(
            "warning: trainer.mixed_precision=bf16 on a CPU without native bf16 (AVX512-BF16/AMX) "
            "is emulated and far slower than fp32; mixed_precision=auto picks fp32 here",
            file=sys.stderr,
        )
    if name != "auto":
        return name
    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "no"
    return "bf16" if cpu_has_bf16() else "no"


def check_trackers(names: list[str]) -> None:
    """Refuse a tracker whose package is missing (accelerate would only warn and log nothing)."""
    from accelerate.utils import is_tensorboard_available, is_wandb_available

    available = {"tensorboard": is_tensorboard_available, "wandb": is_wandb_available}
    for name in names:
        if not available[name]():
            raise UserError(
                f"trainer.report_to: {name} is not installed; `pip install {name}` "
                "or drop it from trainer.report_to"
            )


def launch_world() -> int:
    """How many processes the launcher started (torchrun / `accelerate launch` set WORLD_SIZE)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        raise UserError(
            f"WORLD_SIZE={os.environ['WORLD_SIZE']!r} in the environment is not a number; "
            "launch with torchrun or `accelerate launch`"
        ) from None


def _refuse_sharding_without_gpu() -> None:
    """FSDP / DeepSpeed asked for by the launch config on a machine without a GPU: accelerate
    1.15 either fails deep inside ("no available devices") or, once asked for the CPU, quietly
    trains plain data parallel instead. Neither is what the config says: refuse, with the fix."""
    for name, var in (("FSDP", "ACCELERATE_USE_FSDP"), ("DeepSpeed", "ACCELERATE_USE_DEEPSPEED")):
        if os.environ.get(var, "false").lower() == "true" and not torch.cuda.is_available():
            raise UserError(
                f"the launch config asks for {name} ({var}=true) but this machine has no GPU, "
                f"and accelerate runs {name} on GPUs only; on CPUs launch with "
                '--config_file "$(spear-mm train --accelerate-config cpu_ddp)" (data parallel)'
            )


def make_accelerator(cfg: TrainConfig, out: Path):
    """An `Accelerator` for this run: mixed precision, accumulation, trackers under `out`.

    Several processes without a GPU (`torchrun --nproc_per_node N`, or `accelerate launch
    --multi_gpu --num_processes N` on a CPU machine) are data parallel over gloo: accelerate only
    does that when asked for the CPU, so it is asked here. Without it each process would train
    alone and all of them would write the same `out` (accelerate's `--cpu` launch itself starts
    one process: it expects mpirun for several). A launch whose WORLD_SIZE disagrees with the
    process group accelerate formed is a one-line error before any training.
    """
    from accelerate import Accelerator
    from accelerate.utils import ProjectConfiguration

    tr = cfg.trainer
    check_trackers(list(tr.report_to))
    world = launch_world()
    _refuse_sharding_without_gpu()
    try:
        acc = Accelerator(
            cpu=world > 1 and not torch.cuda.is_available(),
            mixed_precision=resolve_precision(tr.mixed_precision),
            gradient_accumulation_steps=tr.grad_accum,
            log_with=list(tr.report_to) or None,
            project_config=ProjectConfiguration(
                project_dir=str(out), logging_dir=str(out / "logs")
            ),
        )
    except (RuntimeError, ValueError) as exc:
        reason = " ".join(str(exc).split())[:200]
        raise UserError(
            f"cannot start the distributed setup this launch asked for ({reason}); on a CPU "
            'machine use `accelerate launch --config_file "$(spear-mm train --accelerate-config '
            'cpu_ddp)"` or torchrun; FSDP/DeepSpeed configs need GPUs (docs/train.md)'
        ) from None
    if acc.num_processes != world:
        raise UserError(
            f"the launcher started {world} process(es) (WORLD_SIZE) but accelerate formed a group "
            f"of {acc.num_processes}; launch with torchrun or `accelerate launch` and a matching "
            "num_processes (docs/train.md, multi-process)"
        )
    return acc


def load_model(mcfg: ModelConfig):
    """`(model, tokenizer, folder)` for training: resolved, validated, safetensors unless allowed."""
    from transformers import AutoTokenizer

    from spear_mm.io.checkpoint import CheckpointReader, parse_dtype
    from spear_mm.io.sources import resolve_model

    folder = resolve_model(mcfg.name)
    CheckpointReader(folder, allow_pickle=mcfg.allow_pickle).close()  # one-line errors
    model = _from_pretrained(
        folder,
        mcfg.attn_implementation,
        dtype=parse_dtype(mcfg.dtype, "model.dtype"),
        trust_remote_code=mcfg.trust_remote_code,
        use_safetensors=None if mcfg.allow_pickle else True,
    )
    tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=mcfg.trust_remote_code)
    model.config.use_cache = False  # no KV cache when training (and required by checkpointing)
    return model, tokenizer, Path(folder)


def _from_pretrained(folder: Path, attn: str, **kwargs):
    """Load with the asked attention kernel; `auto` lets transformers pick (SDPA where the
    architecture supports it, else eager). An explicit kernel the architecture refuses (Gemma2
    has no SDPA path in transformers 5.x) falls back to eager with a note, not an error."""
    from transformers import AutoModelForCausalLM

    asked = None if attn == "auto" else attn
    try:
        return AutoModelForCausalLM.from_pretrained(folder, attn_implementation=asked, **kwargs)
    except ValueError as exc:
        if asked in (None, "eager") or "attention implementation" not in str(exc):
            raise
        reason = " ".join(str(exc).split())[:120]
        print(
            f"note: model.attn_implementation={attn} is not available for {folder.name} "
            f"({reason}); using eager attention",
            file=sys.stderr,
        )
        return AutoModelForCausalLM.from_pretrained(folder, attn_implementation="eager", **kwargs)


@dataclass(frozen=True)
class RunPlan:
    """How long the run is and how a step's samples are laid out over ranks and micro-steps.

    A global batch of `batch_size × grad_accum × world` blocks per optimizer step. Optimizer step
    `s` consumes stream positions `[s·G, (s+1)·G)`; micro-step `a` of rank `r` takes
    `batch_size` consecutive positions starting at `s·G + (a·world + r)·batch_size`. Positions
    are a pure function of the step, which is what makes resume exact.
    """

    total_steps: int
    batch_size: int
    grad_accum: int
    world: int
    seq_len: int

    @property
    def global_batch(self) -> int:
        return self.batch_size * self.grad_accum * self.world

    def positions(self, step: int, micro: int, rank: int) -> range:
        start = step * self.global_batch + (micro * self.world + rank) * self.batch_size
        return range(start, start + self.batch_size)

    def step_positions(self, step: int) -> range:
        return range(step * self.global_batch, (step + 1) * self.global_batch)


def plan_run(cfg: TrainConfig, world: int, positions_per_epoch: float) -> RunPlan:
    """Total optimizer steps: `max_steps`, else `max_tokens`, else `epochs` of the domain stream.

    `max_tokens` counts block tokens (replay included) and rounds up to whole steps.
    """
    tr = cfg.trainer
    plan = RunPlan(0, tr.batch_size, tr.grad_accum, world, cfg.data.seq_len)
    if tr.max_steps:
        steps = tr.max_steps
    elif tr.max_tokens:
        steps = math.ceil(tr.max_tokens / (plan.global_batch * cfg.data.seq_len))
    else:
        steps = math.ceil(tr.epochs * positions_per_epoch / plan.global_batch)
    if steps <= 0:
        raise UserError("trainer.max_steps: the run has 0 steps; set trainer.max_steps=100")
    return RunPlan(steps, tr.batch_size, tr.grad_accum, world, cfg.data.seq_len)
