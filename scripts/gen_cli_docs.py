"""Write docs/cli.md from the CLI's own --help output, so the reference never disagrees with it.

.venv/bin/python scripts/gen_cli_docs.py
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VERBS = ("train", "analyze", "merge", "eval", "sweep", "run")


def help_text(*args: str) -> str:
    res = subprocess.run(
        [sys.executable, "-m", "spear_mm.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    return (res.stdout or res.stderr).rstrip()


def main() -> None:
    parts = [
        "# CLI and config reference",
        "",
        "Generated from `spear-mm --help` and `spear-mm VERB --help` by `scripts/gen_cli_docs.py`.",
        "Hydra verbs take `key=value` overrides (nested keys with dots, lists as `[a,b]`, grids",
        "with `-m`); every run writes its resolved `config.yaml` and `run_info.json` beside its",
        "results. Exit codes: 0 success, 2 bad input (one line on stderr), 1 internal error.",
        "",
        "```text",
        help_text("--help"),
        "```",
    ]
    for verb in VERBS:
        parts += ["", f"## spear-mm {verb}", "", "```text", help_text(verb, "--help"), "```"]
    (ROOT / "docs" / "cli.md").write_text("\n".join(parts) + "\n")
    print("wrote docs/cli.md")


if __name__ == "__main__":
    main()
