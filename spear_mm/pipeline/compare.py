"""The report's table: base, plain CPT, the three policies, the selected recipe and the uniform
baseline, all scored in one process with the same probes (and MC suites), merged in memory.

Writes `compare.json` (rows with raw scores and the derived metrics) into the stage folder.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from spear_mm.eval import metrics
from spear_mm.eval.probe import Probe
from spear_mm.merge.inmemory import InMemoryMerger
from spear_mm.merge.recipe import load_recipe

POLICIES = ("conservative", "balanced", "aggressive")


def _models(run_dir: Path) -> list[tuple[str, Path | None]]:
    """(label, recipe file) in table order; None marks base / adapted."""
    rows: list[tuple[str, Path | None]] = [("base", None), ("plain CPT (adapted)", None)]
    for policy in POLICIES:
        path = run_dir / "analyze" / "recipes" / f"{policy}.yaml"
        if path.is_file():
            rows.append((f"SPEAR-MM {policy}", path))
    sweep = run_dir / "sweep"
    doc = json.loads((sweep / "sweep.json").read_text()) if (sweep / "sweep.json").is_file() else {}
    solver = doc.get("solver") or {}
    if (sweep / "selected_recipe.yaml").is_file():
        label = solver.get("selected") or "selected"
        rows.append((f"selected ({label})", sweep / "selected_recipe.yaml"))
    uniform = (solver.get("best_per_family") or {}).get("uniform") or {}
    if uniform.get("recipe"):
        path = Path(uniform["recipe"])
        path = path if path.is_absolute() else sweep / path
        if path.is_file():
            rows.append((f"uniform baseline (knob {uniform.get('knob')})", path))
    return rows


def _recipe_body(recipe: Path | None) -> str | None:
    """A recipe's rules without its comment lines (the solver adds its message as a comment)."""
    if recipe is None:
        return None
    lines = recipe.read_text(encoding="utf-8").splitlines()
    return "\n".join(line for line in lines if not line.lstrip().startswith("#"))


def _accuracy(model, tokenizer, tasks: list[str], limit: int) -> float | None:
    """Mean primary score over `tasks` (suites expanded) with lm-eval; None when skipped."""
    if not tasks or limit <= 0:
        return None
    from spear_mm.eval.harness import evaluate

    # MC prompts are short: a 1024-token context lets lm-eval batch them on the CPU.
    res = evaluate(
        model,
        tasks,
        tokenizer=tokenizer,
        limit=limit,
        progress=False,
        use_cache=False,
        max_length=1024,
    )
    scores = [e["score"] for e in res["tasks"].values() if e.get("score") is not None]
    return sum(scores) / len(scores) if scores else None


def compare_models(ccfg, base: Path, adapted: Path, run_dir: Path, folder: Path) -> dict:
    merger = InMemoryMerger.from_pretrained(base, adapted)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(adapted)
    settings = {
        "max_tokens": ccfg.probe_tokens,
        "seq_len": ccfg.seq_len,
        "batch_size": ccfg.batch_size,
    }
    probes = {n: Probe.named(n, **settings) for n in ("general", "finance")}
    layers = merger.num_layers
    rows = []
    done: dict[str, dict] = {}  # recipe text → its row: the same recipe is scored once
    for label, recipe in _models(run_dir):
        t0 = time.perf_counter()
        text = _recipe_body(recipe)
        if text is not None and text in done:
            rows.append({**done[text], "model": label, "recipe": str(recipe), "seconds": 0.0})
            continue
        if label == "base":
            merger.apply_layer_t([0.0] * layers, other_t=0.0)
        elif recipe is None:
            merger.reset()
        else:
            merger.apply(load_recipe(recipe))
        row = {"model": label, "recipe": str(recipe) if recipe else None}
        for name, probe in probes.items():
            row[f"{name}_bpb"] = probe.score(merger.model, tokenizer).bpb
        limit = int(ccfg.mc_limit)
        row["general_mc"] = _accuracy(merger.model, tokenizer, list(ccfg.general_tasks), limit)
        row["finance_mc"] = _accuracy(merger.model, tokenizer, list(ccfg.finance_tasks), limit)
        row["seconds"] = round(time.perf_counter() - t0, 2)
        if text is not None:
            done[text] = row
        print(
            f"spear-mm run: [compare] {label}: general bpb {row['general_bpb']:.4f}, "
            f"finance bpb {row['finance_bpb']:.4f}",
            flush=True,
        )
        rows.append(row)
    _derive(rows)
    (folder / "compare.json").write_text(json.dumps({"rows": rows, "probe": settings}, indent=2))
    return {"rows": rows}


def _derive(rows: list[dict]) -> None:
    """Retention, gain kept and forgetting recovered of every row against base and adapted."""
    base, adapted = rows[0], rows[1]

    def num(value):
        return None if value is None or not metrics.is_defined(value) else float(value)

    for row in rows:
        g, f = row["general_bpb"], row["finance_bpb"]
        lower = {"higher_is_better": False}  # bits per byte: lower is better
        row["general_retention"] = num(metrics.retention(g, base["general_bpb"], **lower))
        row["gain_kept"] = num(
            metrics.gain_kept(f, base["finance_bpb"], adapted["finance_bpb"], **lower)
        )
        row["forgetting_recovered"] = num(
            metrics.forgetting_recovered(g, base["general_bpb"], adapted["general_bpb"], **lower)
        )
