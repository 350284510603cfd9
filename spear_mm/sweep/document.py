"""sweep.json as a typed document: its model and its one reader.

Written by `spear_mm.sweep.finish.write_outputs`; read by the study's comparison (the selected
recipe and the best uniform point), its report and the cross-seed summary. Points, verdict and
solver records stay JSON objects here (their fields: docs/sweeps.md).
"""

from __future__ import annotations

from pathlib import Path

from spear_mm.io.document import StageDocument, read_document

SCHEMA_VERSION = 1
FIX = "re-run `spear-mm sweep` (or the study's sweep stage) to write it"


class SweepDoc(StageDocument):
    """The fields other stages read; everything else `write_outputs` writes is kept as extra."""

    points: list[dict]
    solver: dict | None = None  # with a target: metric, target, selected, best_per_family, ...
    verdict: dict | None = None  # layer-aware families vs the uniform line
    notes: list[str] = []

    def selected_family(self) -> str | None:
        """Family of the solver's selected point (None without a selection)."""
        label = (self.solver or {}).get("selected")
        return next(
            (p.get("family") for p in self.points if label and p.get("label") == label), None
        )

    def best_uniform(self) -> dict:
        """The solver's best uniform point ({} without a target or without one that meets it)."""
        return ((self.solver or {}).get("best_per_family") or {}).get("uniform") or {}


def read_sweep(path: str | Path) -> SweepDoc:
    """sweep.json at `path`; UserError (file, version found / expected) when it is not one."""
    return read_document(path, SweepDoc, SCHEMA_VERSION, FIX)
