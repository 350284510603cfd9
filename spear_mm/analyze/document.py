"""analysis.json as a typed document: its model and its one reader.

Written by `spear_mm.analyze.report.write_outputs`; read by the sweep (the layer ranking), a later
analysis (`prior=`, `score_spec=`), the cross-study check and the study's report. The sections
that are records of their own (ablation, validation, sanity, ...) stay JSON objects here.
"""

from __future__ import annotations

from pathlib import Path

from spear_mm.io.document import StageDocument, parse_document, read_document

SCHEMA_VERSION = 1
FIX = "re-run `spear-mm analyze` to write it"


class AnalysisDoc(StageDocument):
    """The fields other stages read; everything else `write_outputs` writes is kept as extra."""

    layer_ranking: list[int]  # layer indices, most general harm first
    combined_score: list[float] | None = None  # per layer, higher = more harm
    score_spec: dict | None = None
    fitted_spec: dict | None = None
    layers: list[dict] = []  # per-layer features (depth, signals, ...)
    ablation: dict | None = None  # with ablation=true: harm per probe, per_doc records, ...
    validation: dict | None = None  # ρ of the score and of each signal against the ablation
    sanity: dict | None = None
    timing: dict = {}
    inputs: dict = {}  # base / adapted paths and fingerprints

    def harm(self, probe: str) -> list[float] | None:
        """The ablation's per-layer harm on `probe` (None without an ablation of that probe)."""
        values = ((self.ablation or {}).get("harm") or {}).get(probe)
        return [float(v) for v in values] if values is not None else None


def read_analysis(path: str | Path) -> AnalysisDoc:
    """analysis.json at `path`; UserError (file, version found / expected) when it is not one."""
    return read_document(path, AnalysisDoc, SCHEMA_VERSION, FIX)


def analysis_from(data: dict, path: str | Path) -> AnalysisDoc:
    """An analysis document already decoded from `path` (a file that may be one of several
    formats, e.g. `score_spec=`); the same checks as `read_analysis`."""
    return parse_document(data, path, AnalysisDoc, SCHEMA_VERSION, FIX)
