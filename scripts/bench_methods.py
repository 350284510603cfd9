#!/usr/bin/env python
"""Cost per element of every merge method in the registry, one thread, one MLP-sized bf16 pair.

Runs each method's kernel through `apply.merge_tensor` (what both executors call) with a native
plan at t = 0.6 and the parameters below, bf16 output, and prints the best of three in
ns/element. Numbers go to docs/merge.md (## Methods).

    .venv/bin/python scripts/bench_methods.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from spear_mm.merge import methods  # noqa: E402
from spear_mm.merge.apply import DtypePolicy, merge_tensor  # noqa: E402
from spear_mm.merge.plan import TensorPlan  # noqa: E402

SHAPE = (2048, 5632)  # mlp.up_proj of the merge bench's 1B pair
PARAMS = {
    "ties": (("density", 0.3),),
    "dare_linear": (("density", 0.3),),
    "dare_ties": (("density", 0.3),),
    "breadcrumbs": (("density", 0.3),),
    "breadcrumbs_ties": (("density", 0.3),),
    "lowrank": (("rank", 64),),
}


def main() -> None:
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    a = torch.randn(SHAPE, generator=g).to(torch.bfloat16)
    b = (a.float() + 0.02 * torch.randn(SHAPE, generator=g)).to(torch.bfloat16)
    policy = DtypePolicy(out=torch.bfloat16)
    n = a.numel()
    print(f"{SHAPE[0]}x{SHAPE[1]} bf16, 1 thread: method, ns/element (best of 3)")
    for name in methods.names("native"):
        plan = TensorPlan(t=0.6, method=name, params=PARAMS.get(name, ()))
        best = float("inf")
        for _ in range(3):
            t0 = time.perf_counter()
            merge_tensor("model.layers.0.mlp.up_proj.weight", "mlp_up", a, b, plan, policy)
            best = min(best, time.perf_counter() - t0)
        print(f"{name:17s} {best / n * 1e9:7.2f}")


if __name__ == "__main__":
    main()
