"""Build the bundled general accuracy probe `general_defs`: definition -> word, from WordNet 3.0.

A 135M model is at chance on MMLU, so retention measured on accuracy needs a task a small model
does clearly better than chance on. Each question gives the definition of a common English word's
most frequent sense (WordNet's first sense; words tagged >= MIN_TAGGED times in the SemCor
concordance) and asks for the word among four of the same part of speech; lm-eval scores each
choice's log-likelihood after "Definition: ...\\nWord:".

Deterministic (`--seed`): the same package gives the same files. No question's definition is a
gloss of the bundled corpora (spear_mm/data: general_train, general_heldout), no answer word is
used twice, no choice appears in its definition, and no distractor shares the answer's synset.
The correct choice is at position i % 4 (balanced), and the questions are split into three roles
(calibration / selection / test, docs/metrics.md) of equal size, one file each.

    .venv/bin/python scripts/build_defs_suite.py            # downloads wordnet-base with apt-get
    .venv/bin/python scripts/build_defs_suite.py --deb /path/to/wordnet-base_*.deb
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import re
import subprocess
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "spear_mm" / "eval" / "tasks" / "data"
ROLES = ("calibration", "selection", "test")
PER_ROLE = 300
MIN_TAGGED = 3  # SemCor tagged senses of the word: common words only
POS = {"noun": "n", "verb": "v", "adj": "a"}
WORD = re.compile(r"^[a-z]{4,12}$")


def extract(deb: Path | None, work: Path) -> tuple[Path, dict]:
    if deb is None:
        subprocess.run(["apt-get", "download", "wordnet-base"], cwd=work, check=True)
        deb = sorted(work.glob("wordnet-base_*.deb"))[-1]
    version = subprocess.run(["dpkg-deb", "-f", str(deb), "Version"], check=True,
                             capture_output=True, text=True).stdout.strip()  # fmt: skip
    subprocess.run(["dpkg-deb", "-x", str(deb), str(work / "root")], check=True)
    info = {"package": "wordnet-base", "version": version, "deb": deb.name,
            "sha256": hashlib.sha256(deb.read_bytes()).hexdigest()}  # fmt: skip
    return work / "root" / "usr" / "share" / "wordnet", info


def first_senses(wn: Path, pos: str) -> dict[str, str]:
    """{word: offset of its most frequent synset} for common single words of `pos`."""
    out = {}
    for line in (wn / f"index.{pos}").read_text("utf-8").splitlines():
        if line.startswith("  "):
            continue
        f = line.split()
        p_cnt = int(f[3])
        tagged, offsets = int(f[5 + p_cnt]), f[6 + p_cnt :]
        if WORD.match(f[0]) and tagged >= MIN_TAGGED:
            out[f[0]] = offsets[0]
    return out


def synsets(wn: Path, pos: str) -> dict[str, tuple[set[str], str]]:
    """{offset: (its words, its definition)}; the definition is the gloss before any example."""
    out = {}
    for line in (wn / f"data.{pos}").read_text("utf-8").splitlines():
        if line.startswith("  ") or " | " not in line:
            continue
        head, gloss = line.split(" | ", 1)
        f = head.split()
        n = int(f[3], 16)
        words = {re.sub(r"\(.*\)$", "", w).lower() for w in f[4 : 4 + 2 * n : 2]}
        out[f[0]] = (words, " ".join(gloss.split(";")[0].split()))
    return out


def corpus_lines() -> set[str]:
    from spear_mm.io.corpora import load_records

    lines = set()
    for name in ("general_train", "general_heldout"):
        for rec in load_records(name):
            lines.update(" ".join(x.split()) for x in rec["text"].splitlines())
    return lines


def build(wn: Path, seed: int) -> list[dict]:
    rng = random.Random(seed)
    seen_in_corpus = corpus_lines()
    cands, pools = [], {}
    for pos, tag in POS.items():
        senses, sets = first_senses(wn, pos), synsets(wn, pos)
        pools[pos] = sorted(senses)
        for word, offset in sorted(senses.items()):
            words, definition = sets[offset]
            glosses = [g for g in seen_in_corpus if g.startswith(definition)]
            if len(definition.split()) < 4 or word in definition.lower() or glosses:
                continue
            cands.append({"id": f"wn-{tag}-{offset}", "pos": pos, "word": word,
                          "synonyms": words, "definition": definition})  # fmt: skip
    rng.shuffle(cands)
    rows, used = [], set()  # answer words, synsets and definitions already asked
    for c in cands:
        if used & {c["word"], c["id"], c["definition"]}:
            continue
        text = c["definition"].lower()
        pool = [w for w in pools[c["pos"]] if w not in c["synonyms"] and w not in text]
        distractors = rng.sample(pool, 3)
        k = len(rows) % 4
        choices = distractors[:k] + [c["word"]] + distractors[k:]
        used |= {c["word"], c["id"], c["definition"]}
        rows.append({"id": c["id"], "pos": c["pos"], "definition": c["definition"],
                     "choices": choices, "answer": k})  # fmt: skip
        if len(rows) == PER_ROLE * len(ROLES):
            break
    order = list(range(len(rows)))
    rng.shuffle(order)
    for i, idx in enumerate(order):
        rows[idx]["role"] = ROLES[i // PER_ROLE]
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--deb", type=Path, help="a downloaded wordnet-base .deb (else apt-get)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        wn, info = extract(args.deb, Path(tmp))
        rows = build(wn, args.seed)
    for role in ROLES:
        path = OUT / f"general_defs_{role}.jsonl"
        path.write_text(
            "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows if r["role"] == role)
        )
    manifest = OUT / "defs_manifest.json"
    counts = {role: sum(r["role"] == role for r in rows) for role in ROLES}
    manifest.write_text(json.dumps({"source": info, "seed": args.seed, "min_tagged": MIN_TAGGED,
                                    "counts": counts}, indent=2) + "\n")  # fmt: skip
    print(f"wrote {len(rows)} questions: {counts}")


if __name__ == "__main__":
    main()
