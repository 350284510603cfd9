"""AdamW over the trainable parameters and the warmup + cosine learning-rate schedule."""

from __future__ import annotations

import math

import torch

from spear_mm.train.config import TrainerConfig


def lr_factor(step: int, warmup: int, total: int, min_ratio: float) -> float:
    """Multiplier of the peak lr for optimizer step `step` (0-based).

    Linear warmup over `warmup` steps (step 0 already gets 1/warmup, never 0: a zero-lr first
    step would waste a step), then cosine decay from 1 to `min_ratio` reached at the last step
    (`total - 1`). `total <= warmup` keeps the peak after warmup.
    """
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    span = total - 1 - warmup
    if span <= 0:
        return 1.0
    progress = min(1.0, (step - warmup) / span)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_optimizer(model: torch.nn.Module, tr: TrainerConfig) -> torch.optim.AdamW:
    """AdamW on parameters with `requires_grad`; weight decay only on matrices (ndim >= 2).

    Norm gains and biases are not decayed (decaying a norm gain pulls it towards 0, not towards
    its pretrained value). Frozen parameters are not in any group, so they get no state at all.
    """
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    groups = [
        {"params": decay, "weight_decay": tr.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(
        [g for g in groups if g["params"]], lr=tr.lr, betas=(tr.beta1, tr.beta2), eps=tr.eps
    )


def build_scheduler(optimizer, tr: TrainerConfig, total_steps: int):
    """`LambdaLR` with `lr_factor`; stepped once per optimizer step."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, tr.warmup_steps, total_steps, tr.min_lr_ratio)
    )
