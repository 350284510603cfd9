"""`spear-mm run seeds=[0,1,2]`: the study once per CPT seed, then a cross-seed summary.

One CPT run is one draw of the training noise: a verdict that holds on seed 0 may not hold on
seed 1. Each seed's study runs in `<out>/seed_<s>/` (cached stage by stage like any study; the
base model, corpora, roles and probe documents are the same for every seed). The summary
(`<out>/seeds_summary.json` and `.md`) lists each headline number — test-role text, with its
95% interval — per seed, then the mean and spread (sample standard deviation, min, max) across
seeds, and each seed's verdicts.
"""

from __future__ import annotations

import dataclasses
import json
import math
import statistics
from pathlib import Path

from spear_mm.pipeline.document import ADAPTED, SELECTED, UNIFORM, read_compare
from spear_mm.pipeline.gate import study_gate
from spear_mm.sweep.document import read_sweep

# (row id in compare.json, the name the summary gives it, the number)
HEADLINE = (
    (ADAPTED, "plain CPT (adapted)", "general_bpb"),
    (ADAPTED, "plain CPT (adapted)", "finance_bpb"),
    (SELECTED, "selected", "gain_kept"),
    (SELECTED, "selected", "forgetting_recovered"),
    (UNIFORM, "uniform baseline", "gain_kept"),
    (UNIFORM, "uniform baseline", "forgetting_recovered"),
    (ADAPTED, "plain CPT (adapted)", "general_mc"),
    (SELECTED, "selected", "general_mc"),
)
REPLAY_KEYS = ("gain_kept", "forgetting_recovered", "general_mc")


def seed_config(cfg, seed: int):
    """The run config of one seed: its own sub-folder, no further seed list."""
    out = str(Path(cfg.out) / f"seed_{seed}")
    replay = cfg.replay if cfg.replay_seeds is None or seed in cfg.replay_seeds else []
    return dataclasses.replace(cfg, seed=int(seed), out=out, seeds=[], replay=list(replay))


def _value(row: dict | None, key: str) -> tuple[float | None, dict | None]:
    """(point value, interval record) of a table cell; ratios only when measurable."""
    if row is None:
        return None, None
    ci = (row.get("ci") or {}).get(key)
    if isinstance(ci, dict) and "measurable" in ci:
        return (ci["interval"]["value"], ci["interval"]) if ci["measurable"] else (None, None)
    return row.get(key), ci


def seed_record(run_dir: Path, seed: int) -> dict:
    """One seed's headline numbers and verdicts, read from its finished study."""
    compare = read_compare(run_dir / "compare" / "compare.json")
    sweep = read_sweep(run_dir / "sweep" / "sweep.json")
    numbers = {}
    replays = [(r["id"], r["model"]) for r in compare.rows if r["id"].startswith("replay_")]
    for row_id, name, key in [*HEADLINE, *((i, m, k) for i, m in replays for k in REPLAY_KEYS)]:
        value, iv = _value(compare.row(row_id), key)
        numbers[f"{name}: {key}"] = {"value": value, "interval": iv}
    check = compare.families or {}
    for fam, rec in (check.get("families") or {}).items():  # test-role advantage over uniform
        numbers[f"{fam} family: gain kept − uniform's at equal general score"] = {
            "value": rec.get("best_advantage"),
            "interval": rec.get("best_advantage_interval"),
        }
    selected = compare.row(SELECTED)
    verdict = sweep.verdict or {}
    gate = study_gate(compare.row(ADAPTED), compare.row(UNIFORM))
    return {
        "gate": {"passed": gate["passed"], "regime": gate["regime"]},
        "seed": seed,
        "folder": str(run_dir),
        "numbers": numbers,
        "selected": selected["model"] if selected else None,
        "selected_vs_uniform": ((selected or {}).get("vs_uniform") or {}).get("call"),
        "sweep_verdict": verdict.get("summary"),
        "test_verdict": check.get("summary"),
        "layer_aware_beats_uniform": verdict.get("layer_aware_beats_uniform"),
    }


def spread(values: list[float | None]) -> dict:
    """Mean, sample standard deviation, min and max over the defined values."""
    ok = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not ok:
        return {"n": 0, "mean": None, "sd": None, "min": None, "max": None}
    sd = statistics.stdev(ok) if len(ok) > 1 else None
    return {"n": len(ok), "mean": statistics.fmean(ok), "sd": sd, "min": min(ok), "max": max(ok)}


def summarize(records: list[dict]) -> dict:
    keys = list(dict.fromkeys(k for r in records for k in r["numbers"]))  # a replay row may
    # exist on some seeds only (replay_seeds): its other cells are n/a
    across = {k: spread([r["numbers"].get(k, {}).get("value") for r in records]) for k in keys}
    return {"text_role": "test", "seeds": records, "across_seeds": across}


def _fmt(x) -> str:
    return "n/a" if x is None else f"{x:.4f}"


def _gate(g: dict | None) -> str:
    if not g:
        return "n/a"
    state = {True: "passed", False: "failed", None: "undecided"}[g["passed"]]
    return f"{state} ({g['regime']})"


def to_markdown(summary: dict) -> str:
    seeds = summary["seeds"]
    lines = ["# Cross-seed summary (test-role text)", ""]
    lines.append("| number | " + " | ".join(f"seed {r['seed']}" for r in seeds) + " | mean | sd |")
    lines.append("|---|" + "---|" * (len(seeds) + 2))
    for key, agg in summary["across_seeds"].items():
        cells = []
        for r in seeds:
            n = r["numbers"].get(key, {"value": None})
            iv = n.get("interval") or {}
            ci = (
                f" [{_fmt(iv.get('lo'))}, {_fmt(iv.get('hi'))}]" if iv.get("lo") is not None else ""
            )
            cells.append(_fmt(n["value"]) + ci)
        lines.append(
            f"| {key} | " + " | ".join(cells) + f" | {_fmt(agg['mean'])} | {_fmt(agg['sd'])} |"
        )
    lines += ["", "Ratios whose denominator's interval contains 0 are n/a (not measurable).", ""]
    lines += ["## Verdicts per seed", ""]
    for r in seeds:
        lines.append(
            f"- seed {r['seed']}: gate {_gate(r.get('gate'))}; "
            f"{r['selected'] or 'no selected recipe'} (vs uniform: "
            f"{r['selected_vs_uniform'] or 'n/a'}); sweep (selection-role text): "
            f"{r['sweep_verdict']}; families vs uniform (test-role text): "
            f"{r.get('test_verdict') or 'n/a'}"
        )
    return "\n".join(lines) + "\n"


def run_seeds(cfg, run_one) -> int:
    """Run the study for every seed of `cfg.seeds` with `run_one(cfg)`, then write the summary."""
    from spear_mm.io.atomic import atomic_write_text

    records = []
    for seed in cfg.seeds:
        sub = seed_config(cfg, seed)
        print(f"spear-mm run: seed {seed} → {sub.out}", flush=True)
        code = run_one(sub)
        if code:
            return code
        records.append(seed_record(Path(sub.out).absolute(), int(seed)))
    summary = summarize(records)
    out = Path(cfg.out).absolute()
    atomic_write_text(out / "seeds_summary.json", json.dumps(summary, indent=1) + "\n")
    atomic_write_text(out / "seeds_summary.md", to_markdown(summary))
    print(f"spear-mm run: cross-seed summary: {out / 'seeds_summary.md'}", flush=True)
    return 0
