"""The tolerant analysis.json reader."""

from __future__ import annotations

import json

import pytest

from spear_mm.errors import UserError
from spear_mm.sweep.ranking import load_ranking, parse_ranking


def test_layer_ranking_with_scores():
    r = parse_ranking({"layer_ranking": [1, 0, 2], "combined_score": [0.5, 0.9, 0.1]})
    assert r.order == (1, 0, 2) and r.scores == (0.5, 0.9, 0.1) and r.source == "layer_ranking"


def test_scores_only_are_ranked_high_to_low():
    assert parse_ranking({"scores": [0.2, 0.9, 0.2, 0.5]}).order == (1, 3, 0, 2)
    assert parse_ranking({"layer_scores": {"0": 1.0, "1": 3.0}}).order == (1, 0)
    recs = {"layers": [{"layer": 0, "score": 0.1}, {"layer": 1, "combined": 0.7}]}
    assert parse_ranking(recs).order == (1, 0)
    assert parse_ranking({"ranking": {"layer_ranking": [0, 1]}}).source == "ranking.layer_ranking"


def test_errors_are_one_line_user_errors(tmp_path):
    with pytest.raises(UserError, match="no layer ranking"):
        parse_ranking({"something": 1})
    path = tmp_path / "analysis.json"
    path.write_text(json.dumps({"layer_ranking": [0, 1, 2]}))
    with pytest.raises(UserError, match="layers 0..3"):
        load_ranking(path, 4)
    path.write_text("{nope")
    with pytest.raises(UserError, match="not valid JSON"):
        load_ranking(path, 3)
    with pytest.raises(UserError, match="cannot read"):
        load_ranking(tmp_path / "missing.json", 3)
