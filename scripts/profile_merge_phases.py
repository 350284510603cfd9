#!/usr/bin/env python
"""Time a merge's phases in-process: reads, kernels and writes, summed over threads (wall and CPU).

Wraps `TensorFile.read`, `merge_tensor` and `PlannedWriter.add`, runs `run_merge` on a recipe
and prints one line. Used for the per-phase numbers in docs/benchmarks.md (## Merge) on the
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
from spear_mm.merge import apply, executor  # noqa: E402
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
    args = ap.parse_args()
    direct.TensorFile.read = timed("read", direct.TensorFile.read)
    planned.PlannedWriter.add = timed("write", planned.PlannedWriter.add)
    executor.merge_tensor = timed("kernel", apply.merge_tensor)
    shutil.rmtree(args.out, ignore_errors=True)
    os.sync()
    recipe = load_recipe(args.recipe)
    t0, c0 = time.perf_counter(), os.times()
    executor.run_merge(
        recipe,
        args.out,
        threads=args.threads,
        shard_size="500MB",
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
