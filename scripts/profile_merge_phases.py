#!/usr/bin/env python
"""Time a merge's phases in-process: reads, kernels and writes, summed over threads (wall and CPU).

Wraps the block reads (`TensorFile.map`: the mapping only; the pages are read when the kernels
touch them, so a cold read shows up as kernel time), the streamed kernels by method pass
(`blockwise`), the block writes (`PlannedWriter.write_at`) and each whole tensor
(`streamed.merge_streamed`), runs `run_merge` on a recipe and prints one line. Used for the per-phase numbers in docs/benchmarks.md (## Merge) on the
pair `scripts/bench_merge.py --keep` leaves behind:

    .venv/bin/python scripts/profile_merge_phases.py /tmp/spear_mm_bench/slerp_gradient.yaml --threads 2
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from spear_mm.io import direct, planned  # noqa: E402
from spear_mm.merge import blockwise, executor, streamed  # noqa: E402
from spear_mm.merge.recipe import load_recipe  # noqa: E402

TOTALS: dict[str, float] = collections.defaultdict(float)
_LOCK = threading.Lock()


def timed(key: str, fn):
    def wrapper(*args, **kwargs):
        t0, c0 = time.perf_counter(), time.thread_time()
        try:
            return fn(*args, **kwargs)
        finally:
            with _LOCK:
                TOTALS[key + " wall"] += time.perf_counter() - t0
                TOTALS[key + " cpu"] += time.thread_time() - c0

    return wrapper


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("recipe")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="/tmp/spear_mm_bench/out-phases")
    ap.add_argument("--buffered-io", action="store_true")
    ap.add_argument("--shard-size", default="500MB")
    args = ap.parse_args()
    direct.TensorFile.map = timed("map", direct.TensorFile.map)
    planned.PlannedWriter.write_at = timed("write", planned.PlannedWriter.write_at)
    executor.merge_streamed = timed("tensor", streamed.merge_streamed)
    for name in ("_first_pass", "_combine_pass", "_mk_cosine", "_cosine_pass"):
        setattr(blockwise, name, timed(name.strip("_"), getattr(blockwise, name)))
    shutil.rmtree(args.out, ignore_errors=True)
    os.sync()
    recipe = load_recipe(args.recipe)
    t0, c0 = time.perf_counter(), os.times()
    executor.run_merge(
        recipe,
        args.out,
        threads=args.threads,
        shard_size=args.shard_size,
        progress=False,
        direct_io=False if args.buffered_io else None,
    )
    wall, c1 = time.perf_counter() - t0, os.times()
    shutil.rmtree(args.out, ignore_errors=True)
    phases = "  ".join(f"{k} {v:.2f}" for k, v in sorted(TOTALS.items()))
    print(
        f"threads {args.threads}: wall {wall:.2f} s, user {c1.user - c0.user:.2f} s, "
        f"sys {c1.system - c0.system:.2f} s | {phases}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
