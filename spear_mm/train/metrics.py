"""`out/metrics.jsonl`: one JSON object per logged step, consistent across resumes.

Rows: `{"step", "loss", "lr", "tokens", "tokens_per_s", "elapsed_s"}` for training steps (`step` is
the number of optimizer steps done, 1-based), plus `val_loss` (domain) and `val_loss_general` on
evaluation steps; the evaluation before training is a row with `step: 0` and only validation
keys. On resume, rows past the resumed step (written by the killed run after its last
checkpoint) are dropped first, so the file reads as one uninterrupted run.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from spear_mm.io.atomic import atomic_write_text


def _clean(value):
    # JSON has no NaN/inf; write null so the file stays strict JSON even after a divergence.
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class MetricsLog:
    """Append-only JSONL writer (main process only), truncated to a step on resume."""

    def __init__(self, path: Path, enabled: bool = True):
        self.path = path
        self.enabled = enabled

    def truncate_after(self, step: int) -> None:
        """Keep only rows with `step <= step` (all rows are dropped for step 0 fresh starts)."""
        if not self.enabled or not self.path.is_file():
            return
        kept = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by a kill: drop it
            if row.get("step", math.inf) <= step:
                kept.append(line)
        if step == 0:
            kept = []
        atomic_write_text(self.path, "".join(f"{line}\n" for line in kept))

    def write(self, row: dict) -> None:
        if not self.enabled:
            return
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps({k: _clean(v) for k, v in row.items()}) + "\n")
            fh.flush()


def read_metrics(path: Path) -> list[dict]:
    """All complete rows of a metrics file."""
    rows = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows
