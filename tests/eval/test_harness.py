"""lm-eval integration on a tiny model: live vs folder, probe agreement, cache, finance pack."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from spear_mm.errors import UserError
from spear_mm.eval import harness, suites
from spear_mm.eval.fingerprint import model_fingerprint
from spear_mm.eval.probe import bits_per_byte, probe_texts

FIXTURES = Path(__file__).parent / "fixtures"
PACK_FILES = {
    "spear_fpb": str(FIXTURES / "fpb.jsonl"),
    "spear_fiqa_sa": str(FIXTURES / "fiqa_sa.jsonl"),
    "spear_fin_headlines": str(FIXTURES / "fin_headlines.jsonl"),
}


def test_live_and_folder_agree_and_match_the_probe(tiny_folder, tiny_loaded, tmp_path):
    model, tok = tiny_loaded
    tasks = ["general_ppl", "spear_general_mc"]
    kw = dict(limit=4, max_length=512, progress=False)
    live = harness.evaluate(model, tasks, tokenizer=tok, cache_dir=tmp_path / "a", **kw)
    disk = harness.evaluate(tiny_folder, tasks, cache_dir=tmp_path / "b", **kw)
    assert list(live["tasks"]) == ["spear_general_ppl", "spear_general_mc"]
    assert live["model"]["fingerprint"] == model_fingerprint(model)
    assert disk["model"]["fingerprint"] == model_fingerprint(tiny_folder)
    for task in live["tasks"]:
        a, b = live["tasks"][task], disk["tasks"][task]
        assert a["primary"] == b["primary"] and a["n_samples"]["effective"] == 4
        assert a["score"] == pytest.approx(b["score"], rel=1e-6), task
    # lm-eval's rolling bits-per-byte == the native probe over the same documents and context.
    probe = bits_per_byte(
        model, tok, probe_texts("general", role="test")[:4], max_tokens=10**7, seq_len=512
    )
    ppl = live["tasks"]["spear_general_ppl"]
    assert ppl["higher_is_better"] is False
    assert ppl["score"] == pytest.approx(probe.bpb, rel=1e-6)


def test_probe_matches_lm_eval_with_short_windows(tiny_loaded, tmp_path):
    """Several windows per document: the window layout must match lm-eval's exactly."""
    model, tok = tiny_loaded
    res = harness.evaluate(
        model,
        ["spear_finance_ppl"],
        tokenizer=tok,
        limit=3,
        max_length=48,
        cache_dir=tmp_path,
        progress=False,
    )
    probe = bits_per_byte(
        model, tok, probe_texts("finance", role="test")[:3], max_tokens=10**7, seq_len=48
    )
    assert res["tasks"]["spear_finance_ppl"]["score"] == pytest.approx(probe.bpb, rel=1e-6)


def test_cache_hits_without_loading_the_model(tiny_folder, tmp_path, monkeypatch):
    kw = dict(limit=2, max_length=256, cache_dir=tmp_path, progress=False)
    first = harness.evaluate(tiny_folder, ["finance_ppl"], **kw)
    assert first["tasks"]["spear_finance_ppl"]["cached"] is False

    def no_load(*a, **k):
        raise AssertionError("the model was loaded although every task is cached")

    monkeypatch.setattr(harness, "_load_folder", no_load)
    again = harness.evaluate(tiny_folder, ["finance_ppl"], **kw)
    entry = again["tasks"]["spear_finance_ppl"]
    assert entry["cached"] is True
    assert entry["score"] == first["tasks"]["spear_finance_ppl"]["score"]
    # Another limit is another cache entry: it must run (and so load the model).
    with pytest.raises(AssertionError, match="was loaded"):
        harness.evaluate(tiny_folder, ["finance_ppl"], **{**kw, "limit": 3})


def _choice_logliks(model, tok, context: str, choices: list[str]) -> list[float]:
    out = []
    ctx = tok(context, add_special_tokens=False)["input_ids"]
    for choice in choices:
        cont = tok(" " + choice, add_special_tokens=False)["input_ids"]
        ids = torch.tensor([ctx + cont])
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=ids[:, :-1]).logits[0].double(), -1)
        pos = torch.arange(len(ctx) - 1, len(ctx) + len(cont) - 1)
        out.append(float(logp[pos, torch.tensor(cont)].sum()))
    return out


def _expected_label(task: str, row: dict) -> int:
    # Written from each dataset's documentation, independently of the YAML templates.
    if task == "spear_fpb":
        return row["label"]
    if task == "spear_fiqa_sa":
        return 0 if row["score"] < -0.1 else (1 if row["score"] < 0.1 else 2)
    return 1 if row["output"].lower() == "yes" else 0


def test_finance_pack_runs_offline_on_fixtures(tiny_loaded, tmp_path):
    import json

    from jinja2 import Template

    model, tok = tiny_loaded
    res = harness.evaluate(
        model,
        ["finance_pack"],
        tokenizer=tok,
        data_files=PACK_FILES,
        max_length=512,
        cache_dir=tmp_path,
        progress=False,
    )
    assert list(res["tasks"]) == ["spear_fpb", "spear_fiqa_sa", "spear_fin_headlines"]
    for task, path in PACK_FILES.items():
        cfg = yaml.safe_load((suites.TASKS_DIR / f"{task}.yaml").read_text())
        rows = [json.loads(x) for x in Path(path).read_text().splitlines()]
        hits = 0
        for row in rows:
            context = Template(cfg["doc_to_text"]).render(**row)
            ll = _choice_logliks(model, tok, context, cfg["doc_to_choice"])
            hits += int(max(range(len(ll)), key=ll.__getitem__) == _expected_label(task, row))
        entry = res["tasks"][task]
        assert entry["n_samples"]["effective"] == len(rows)
        assert entry["metrics"]["acc"] == pytest.approx(hits / len(rows)), task
        assert entry["primary"] == "acc" and entry["score"] == entry["metrics"]["acc"]


def test_results_record_settings_and_versions(tiny_loaded, tmp_path):
    model, tok = tiny_loaded
    res = harness.evaluate(
        model,
        ["spear_general_ppl"],
        tokenizer=tok,
        limit=1,
        seed=7,
        max_length=256,
        cache_dir=tmp_path,
        progress=False,
    )
    assert res["settings"]["limit"] == 1 and res["settings"]["seed"] == 7
    assert res["settings"]["max_length"] == 256
    assert {"lm_eval", "torch", "transformers", "spear_mm"} <= set(res["versions"])
    assert res["model"]["source"] == "<in-memory>"


def test_argument_errors(tiny_loaded, tmp_path):
    model, tok = tiny_loaded
    with pytest.raises(UserError, match="tokenizer"):
        harness.evaluate(model, ["general_ppl"], cache_dir=tmp_path)
    with pytest.raises(UserError, match="no tasks"):
        harness.evaluate(model, [], tokenizer=tok, cache_dir=tmp_path)
    with pytest.raises(UserError, match="limit"):
        harness.evaluate(model, ["general_ppl"], tokenizer=tok, limit=0, cache_dir=tmp_path)
    with pytest.raises(UserError, match="batch_size"):
        harness._resolve_batch_size("big", "cpu", 128)
    assert harness._resolve_batch_size("auto", "cpu", 8192) == 1
    assert harness._resolve_batch_size("auto", "cuda:0", 8192) == "auto"
