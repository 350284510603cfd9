#!/usr/bin/env python
"""Cost of one learned-family fit against sweep points on the same probes, side by side.

Loads a base / adapted pair once (default: SmolLM2-135M and a CPT checkpoint), builds the sweep's
probes at the given settings, then alternates `--rounds` times: 10 uniform sweep points (merge in
memory + score the selection-role probes) and one learned fit at knob 0.45 (calibration-role
probes, `LearnSettings` defaults) plus the scoring of its point. Prints each round and the
medians with their spread; the issue's budget is one fit ≤ 10 sweep points.

    .venv/bin/python scripts/bench_learned.py --adapted runs/demo/train/final --rounds 3
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from spear_mm.eval.config import ProbeSettings  # noqa: E402
from spear_mm.sweep.config import LearnSettings  # noqa: E402
from spear_mm.sweep.evaluate import Scorer, SweepSession, make_probes  # noqa: E402
from spear_mm.sweep.learned import learned_schedule  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", default="smollm2-135m")
    ap.add_argument("--adapted", required=True)
    ap.add_argument("--max-tokens", type=int, default=2048)
    ap.add_argument("--doc-max-tokens", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    settings = ProbeSettings(max_tokens=args.max_tokens, doc_max_tokens=args.doc_max_tokens)
    session = SweepSession.open(args.base, args.adapted, Scorer(make_probes(settings)))
    calib = make_probes(settings, role="calibration")
    learn = LearnSettings()
    session.warm_up()
    merger, tok = session.merger, session.tokenizer
    points, fits = [], []
    for r in range(args.rounds):
        t0 = time.perf_counter()
        for k in range(10):
            merger.apply_layer_t([0.05 * k] * merger.num_layers, other_t=0.05 * k)
            session.scorer(merger.model, tok)
        points.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        sched, record = learned_schedule(merger, calib, tok, 0.45, learn)
        merger.apply_layer_t(sched.layer_t, other_t=sched.nonlayer_t)
        session.scorer(merger.model, tok)
        fits.append(time.perf_counter() - t0)
        print(f"round {r}: 10 points {points[-1]:.1f} s, one fit + its point {fits[-1]:.1f} s "
              f"(ratio {fits[-1] / points[-1]:.2f})", flush=True)  # fmt: skip
    ratios = [f / p for f, p in zip(fits, points, strict=True)]
    print(f"median: 10 points {statistics.median(points):.1f} s "
          f"[{min(points):.1f}, {max(points):.1f}], fit {statistics.median(fits):.1f} s "
          f"[{min(fits):.1f}, {max(fits):.1f}], ratio {statistics.median(ratios):.2f} "
          f"[{min(ratios):.2f}, {max(ratios):.2f}] ({learn.steps} steps, "
          f"{learn.windows_per_step} window(s) of each probe per step)")  # fmt: skip


if __name__ == "__main__":
    main()
