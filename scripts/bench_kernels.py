#!/usr/bin/env python
"""Interpolation kernels' cost per element, one thread, on one MLP-sized bf16 pair.

Times, for several sub-block sizes (`kernels.SUB`: the elements converted and combined at a time
inside a BLOCK), the passes a streamed merge makes: the LERP path's one pass (combine and the
cosine's sums), and the SLERP path of a mergekit recipe (mergekit's chunk norms, its dot
products, the combine); then whole-tensor `kernels.slerp` (mergekit rounding, bf16 output into a
reused buffer). Numbers go to docs/benchmarks.md (## Merge) and the SUB comment in
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


def main() -> int:
    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(SHAPE, generator=gen)
    a = w.to(torch.bfloat16)
    b = (w + 0.01 * torch.randn(SHAPE, generator=gen)).to(torch.bfloat16)
    out = torch.empty_like(a)
    n = a.numel()
    shipped, shipped_sub = K.BLOCK, K.SUB

    def one_pass():
        K.slerp(a, b, 0.3, out_dtype=torch.bfloat16, mergekit_rounding=True, out=out)

    fa, fb, fo = a.view(-1), b.view(-1), out.view(-1)
    ca, cb = torch.tensor(0.7), torch.tensor(0.3)
    na = K.mk_norm(K.mk_norm_parts(fa, torch.float32))
    nb = K.mk_norm(K.mk_norm_parts(fb, torch.float32))
    passes = {
        "lerp pass (combine + sums)": lambda: K.combine_span(
            fa, fb, fo, ca, cb, torch.float32, [0.0, 0.0, 0.0]
        ),
        "mergekit chunk norms": lambda: (
            K.mk_norm_parts(fa, torch.float32),
            K.mk_norm_parts(fb, torch.float32),
        ),
        "mergekit dot products": lambda: K.mk_dot_parts(fa, fb, na, nb, torch.float32),
        "combine": lambda: K.combine_span(fa, fb, fo, ca, cb, torch.float32),
    }
    print(f"{SHAPE} bf16 pair, one thread, ns per element (best of 7), BLOCK {shipped >> 10} Ki")
    print("| SUB | " + " | ".join(passes) + " | whole-tensor slerp |")
    print("|---" * (len(passes) + 2) + "|")
    for sub in (1 << 15, 1 << 16, 1 << 17, 1 << 18, 1 << 19):
        K.SUB = sub
        cells = [f"{best_of(fn) / n * 1e9:.2f}" for fn in (*passes.values(), one_pass)]
        print(f"| {sub >> 10} Ki | " + " | ".join(cells) + " |")
    K.SUB = shipped_sub
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
