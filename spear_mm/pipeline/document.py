"""compare.json as a typed document: its model, its row ids and its one reader.

Written by `spear_mm.pipeline.compare.compare_models`; read by the report (findings) and the
cross-seed summary. Each row carries a stable `id` — `base`, `adapted`, a policy name
(`conservative`, `balanced`, `aggressive`), `selected`, `uniform`, `replay_<percent>` — that
readers look rows up
by; `model` is the display label and may change freely.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import field_validator

from spear_mm.io.document import StageDocument, read_document

SCHEMA_VERSION = 1
FIX = "re-run the study's compare stage (`spear-mm run`) to write it"

BASE, ADAPTED, SELECTED, UNIFORM = "base", "adapted", "selected", "uniform"


def replay_id(ratio: float) -> str:
    """Row id (and stage folder) of the CPT baseline with `ratio` general replay: `replay_25`."""
    return f"replay_{100 * ratio:g}"


class CompareDoc(StageDocument):
    """The table: one row per model (raw scores, derived ratios, intervals), probe metadata,
    the text roles and the bootstrap settings."""

    text_role: str
    rows: list[dict]
    probe: dict = {}
    probes: dict = {}
    roles: dict = {}
    families: dict | None = None  # test-role verdict per sweep family (pipeline.families)
    bootstrap: dict = {}

    @field_validator("rows")
    @classmethod
    def _rows_have_ids(cls, rows: list[dict]) -> list[dict]:
        for i, row in enumerate(rows):
            if not isinstance(row.get("id"), str) or not isinstance(row.get("model"), str):
                raise ValueError(f"row {i} needs a string 'id' and 'model'")
        return rows

    def row(self, row_id: str) -> dict | None:
        """The row with stable id `row_id` (None when the table has no such row)."""
        return next((r for r in self.rows if r["id"] == row_id), None)


def read_compare(path: str | Path) -> CompareDoc:
    """compare.json at `path`; UserError (file, version found / expected) when it is not one."""
    return read_document(path, CompareDoc, SCHEMA_VERSION, FIX)
