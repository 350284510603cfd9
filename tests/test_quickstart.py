"""docs/quickstart.md's walkthrough, run exactly as printed (on the built-in tiny model), from a
folder outside the checkout, with the installed `spear-mm` on PATH."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[1] / "docs" / "quickstart.md"
pytestmark = pytest.mark.slow


def doc_block(marker: str) -> str:
    """The fenced bash block that follows `<!-- doc-test: marker -->` in the quickstart."""
    text = DOC.read_text(encoding="utf-8")
    match = re.search(rf"<!-- doc-test: {marker} -->\n```bash\n(.*?)\n```", text, re.S)
    assert match, f"no doc-test block {marker!r} in {DOC}"
    return match.group(1)


def test_walkthrough_runs_as_printed(tmp_path):
    script = doc_block("walkthrough")
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "SPEAR_MM_HOME": str(tmp_path / "home"),
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
    }
    proc = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1] == "llama"  # from_pretrained loaded the merge
    for path in ("runs/cpt/final/config.json", "runs/an/analysis.json", "runs/sw/frontier.png",
                 "runs/sw/selected_recipe.yaml", "runs/merged/config.json",
                 "runs/eval/results.json"):  # fmt: skip
        assert (tmp_path / path).is_file(), path
