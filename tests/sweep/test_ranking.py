"""The analyzer's ranking, read through analysis.json's one reader (schema version checked)."""

from __future__ import annotations

import json

import pytest

from spear_mm.analyze.document import SCHEMA_VERSION
from spear_mm.errors import UserError
from spear_mm.sweep.ranking import load_ranking


def _write(path, **doc):
    path.write_text(json.dumps({"schema_version": SCHEMA_VERSION, **doc}))
    return path


def test_layer_ranking_with_scores(tmp_path):
    path = _write(tmp_path / "a.json", layer_ranking=[1, 0, 2], combined_score=[0.5, 0.9, 0.1])
    r = load_ranking(path, 3)
    assert r.order == (1, 0, 2) and r.scores == (0.5, 0.9, 0.1) and r.source == "layer_ranking"
    assert load_ranking(_write(tmp_path / "b.json", layer_ranking=[0, 1]), 2).scores is None


def test_errors_are_one_line_user_errors(tmp_path):
    path = _write(tmp_path / "analysis.json", layer_ranking=[0, 1, 2])
    with pytest.raises(UserError, match="layers 0..3"):
        load_ranking(path, 4)
    with pytest.raises(UserError, match="layer_ranking.*Field required"):
        load_ranking(_write(tmp_path / "x.json", scores=[0.2, 0.9]), 2)  # another layout
    path.write_text("{nope")
    with pytest.raises(UserError, match="not valid JSON"):
        load_ranking(path, 3)
    with pytest.raises(UserError, match="cannot read"):
        load_ranking(tmp_path / "missing.json", 3)


@pytest.mark.parametrize("version, seen", [(None, "no schema_version"), (99, "schema_version 99")])
def test_wrong_or_missing_version_names_file_and_versions(tmp_path, version, seen):
    path = tmp_path / "analysis.json"
    doc = {"layer_ranking": [0, 1]} | ({} if version is None else {"schema_version": version})
    path.write_text(json.dumps(doc))
    with pytest.raises(UserError) as err:
        load_ranking(path, 2)
    msg = str(err.value)
    assert str(path) in msg and seen in msg and f"expected schema_version {SCHEMA_VERSION}" in msg
    assert "\n" not in msg and "spear-mm analyze" in msg
