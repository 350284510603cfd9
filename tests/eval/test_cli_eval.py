"""`spear-mm eval`: override conveniences, table + results.json, cache on the second run."""

from __future__ import annotations

import json
import subprocess
import sys

from spear_mm.cli.eval import rewrite_overrides
from spear_mm.cli.main import main


def test_rewrite_overrides():
    assert rewrite_overrides(["suite=general_ppl,finance_ppl", "tasks=mmlu,gsm8k"]) == [
        "suite=[general_ppl,finance_ppl]",
        "tasks=[mmlu,gsm8k]",
    ]
    # With -m a comma is Hydra's sweep and stays one.
    assert rewrite_overrides(["-m", "suite=a,b"]) == ["-m", "suite=a,b"]
    assert rewrite_overrides(["suite=[a,b]", "suite=a"]) == ["suite=[a,b]", "suite=a"]
    # A single task or include folder is a one-item list; model= is left to hydra_app.
    assert rewrite_overrides(["tasks=mmlu", "include_path=/t"]) == [
        "tasks=[mmlu]",
        "include_path=[/t]",
    ]
    assert rewrite_overrides(["model=/tmp/m"]) == ["model=/tmp/m"]


def test_help_does_not_import_lm_eval():
    code = (
        "import sys; from spear_mm.cli.main import main; rc = main(['eval', '--help']); "
        "print('LM_EVAL' if 'lm_eval' in sys.modules else 'CLEAN', rc)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().endswith("CLEAN 0"), out.stdout[-300:]
    assert "suite=" in out.stdout and "general_ppl" in out.stdout


def test_eval_end_to_end_and_cache(tiny_folder, tmp_path, capsys):
    args = [
        "eval",
        f"model={tiny_folder}",
        "suite=general_ppl,finance_ppl",
        "limit=2",
        "max_length=256",
        f"cache_dir={tmp_path / 'cache'}",
    ]
    assert main([*args, f"out={tmp_path / 'run1'}"]) == 0
    first = capsys.readouterr().out
    assert "spear_general_ppl" in first and "bits_per_byte" in first
    results = json.loads((tmp_path / "run1" / "results.json").read_text())
    assert set(results["tasks"]) == {"spear_general_ppl", "spear_finance_ppl"}
    assert results["settings"]["limit"] == 2 and results["model"]["fingerprint"]
    assert results["suites"] == ["finance_ppl", "general_ppl"]
    assert (tmp_path / "run1" / "run_info.json").is_file()
    assert (tmp_path / "run1" / "config.yaml").is_file()

    assert main([*args, f"out={tmp_path / 'run2'}"]) == 0
    again = json.loads((tmp_path / "run2" / "results.json").read_text())
    for task, entry in again["tasks"].items():
        assert entry["cached"] is True
        assert entry["score"] == results["tasks"][task]["score"]


def test_bad_input_exits_2(capsys):
    assert main(["eval", "suite=nope"]) == 2
    assert main(["eval", "limit=-3"]) == 2
    err = capsys.readouterr().err
    assert "suite/nope" in err and "limit" in err
