"""Read one stage document (analysis.json, sweep.json, compare.json) into its pydantic model.

Each stage writes one JSON document with a top-level ``schema_version``; the stage that owns the
file defines its model (`analyze.document`, `sweep.document`, `pipeline.document`) and calls
`read_document` — the only place such a file is parsed. A missing file, bad JSON, a wrong or
missing version, or a field of the wrong type is a one-line `UserError` naming the file and the
fix. Models allow extra keys (a newer writer may add some), never fewer.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from spear_mm.errors import UserError

Doc = TypeVar("Doc", bound="StageDocument")


class StageDocument(BaseModel):
    """Base of the stage documents: a version the reader checks, extra keys kept."""

    model_config = ConfigDict(extra="allow")

    schema_version: int


def read_document(path: str | Path, model: type[Doc], version: int, fix: str) -> Doc:
    """`path` parsed as `model`; its ``schema_version`` must equal `version`.

    `fix` says how to get a good file (e.g. "re-run `spear-mm analyze`"); it ends each error.
    """
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise UserError(f"{p}: cannot read ({exc.strerror}); {fix}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        where = f" (line {exc.lineno})" if isinstance(exc, json.JSONDecodeError) else ""
        raise UserError(f"{p}: not valid JSON{where}; {fix}") from None
    return parse_document(data, p, model, version, fix)


def parse_document(data, path: str | Path, model: type[Doc], version: int, fix: str) -> Doc:
    """Already-decoded JSON `data` (read from `path`) as `model`; the checks of `read_document`."""
    p = Path(path)
    if not isinstance(data, dict):
        raise UserError(f"{p}: expected a JSON object at the top level; {fix}")
    found = data.get("schema_version")
    if found != version:
        seen = "no schema_version" if found is None else f"schema_version {found!r}"
        raise UserError(f"{p}: {seen}, expected schema_version {version}; {fix}")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(k) for k in err["loc"]) or "?"
        raise UserError(f"{p}: key '{key}': {err['msg']}; {fix}") from None
