"""Is bf16 native on this CPU? One-thread matmul time in fp32 vs bf16 (weights and autocast).

    .venv/bin/python scripts/bench_bf16.py [--reps 5]

A CPU without AVX512-BF16/AMX emulates bf16; this is the measurement behind
`mixed_precision=auto` and `autocast_bf16` applying bf16 only where it is native (docs/train.md).
Prints the median and range of each arm (arms interleaved per repetition).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from spear_mm.train.runtime import cpu_has_bf16


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    a, w = torch.randn(1024, 576), torch.randn(576, 1536)  # SmolLM2-135M's MLP up projection

    def autocast_mm():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return a @ w

    arms = {"fp32": lambda: a @ w, "bf16 autocast": autocast_mm,
            "bf16 weights": lambda: a.bfloat16() @ w.bfloat16()}  # fmt: skip
    times: dict[str, list[float]] = {k: [] for k in arms}
    for _ in range(args.reps):
        for name, fn in arms.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    print(f"torch {torch.__version__}, capability {torch.backends.cpu.get_cpu_capability()}, "
          f"native bf16: {cpu_has_bf16()}")  # fmt: skip
    base = statistics.median(times["fp32"])
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"{name:14s} median {med * 1e3:8.1f} ms  range {min(ts) * 1e3:.1f}-"
              f"{max(ts) * 1e3:.1f} ms  {med / base:5.1f}x fp32")  # fmt: skip


if __name__ == "__main__":
    main()
