#!/usr/bin/env python
"""Whole-tensor SLERP kernel cost per element, one thread, on one MLP-sized bf16 pair.

Times `kernels.slerp` (mergekit rounding, bf16 output into a reused buffer) at several block
sizes, and the two-pass form it replaced (mergekit's cosine, then the combine) at the shipped
block size. Numbers go to docs/benchmarks.md (## Merge) and the BLOCK comment in
spear_mm/merge/kernels.py.

    .venv/bin/python scripts/bench_kernels.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from spear_mm.merge import kernels as K  # noqa: E402

SHAPE = (2048, 5632)  # mlp.up_proj of the merge bench's 1B pair


def best_of(fn, repeats: int = 7) -> float:
    fn()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def set_block(n: int) -> None:
    K.BLOCK = n
    K._blocks.__defaults__ = (n,)


def main() -> int:
    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(SHAPE, generator=gen)
    a = w.to(torch.bfloat16)
    b = (w + 0.01 * torch.randn(SHAPE, generator=gen)).to(torch.bfloat16)
    out = torch.empty_like(a)
    n = a.numel()
    shipped = K.BLOCK

    def one_pass():
        K.slerp(a, b, 0.3, out_dtype=torch.bfloat16, mergekit_rounding=True, out=out)

    def two_pass():
        cos = K.mergekit_cosine(a, b)
        coef_a, coef_b, _ = K.slerp_coefficients(cos, 0.3)
        K._combine(a, b, coef_a, coef_b, torch.float32, torch.bfloat16, out=out)

    print(f"{SHAPE} bf16 pair (cos 0.99995), one thread, ns per element (best of 7)")
    for block in (1 << 16, 1 << 18, 1 << 19, 1 << 20, 1 << 21):
        set_block(block)
        print(f"one pass, block {block >> 10:5d} Ki: {best_of(one_pass) / n * 1e9:.2f}")
    set_block(shipped)
    print(f"two passes (before), block {shipped >> 10} Ki: {best_of(two_pass) / n * 1e9:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
