"""The report's table: base, plain CPT, the three policies, the selected recipe and the uniform
baseline, all scored in one process with the same probes (and MC suites), merged in memory.

Everything here reads **test-role** text (spear_mm.io.roles): the documents no stage chose
anything on. Writes `compare.json` into the stage folder: rows with raw scores, derived metrics,
per-document NLL (`docs`) and per-question MC records (`mc_records`), the paired 95% bootstrap
intervals of every number (`ci`) and of each row's difference from the uniform baseline
(`vs_uniform`), and the document ids of every role (`roles`).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from spear_mm.analyze.policies import POLICIES
from spear_mm.eval import evidence
from spear_mm.eval.config import PROBE_NAMES
from spear_mm.eval.probe import Probe, role_records
from spear_mm.io.atomic import json_safe
from spear_mm.merge.inmemory import InMemoryMerger
from spear_mm.merge.recipe import load_recipe
from spear_mm.pipeline.config import CompareConfig
from spear_mm.pipeline.document import (
    ADAPTED,
    BASE,
    SCHEMA_VERSION,
    SELECTED,
    UNIFORM,
    replay_id,
)
from spear_mm.pipeline.families import families_finding, family_check
from spear_mm.sweep.document import read_sweep
from spear_mm.sweep.points import derive_scores, finite_or_none

ROLE = "test"  # compare states numbers: it reads the documents nothing was chosen on


def _models(run_dir: Path) -> list[tuple[str, str, Path | None]]:
    """(row id, label, recipe file) in table order; None marks base / adapted. The id is what
    readers look a row up by (spear_mm.pipeline.document); the label is for people."""
    rows: list[tuple[str, str, Path | None]] = [
        (BASE, "base", None),
        (ADAPTED, "plain CPT (adapted)", None),
    ]
    for policy in POLICIES:
        path = run_dir / "analyze" / "recipes" / f"{policy.name}.yaml"
        if path.is_file():
            rows.append((policy.name, f"SPEAR-MM {policy.name}", path))
    sweep = run_dir / "sweep"
    doc = read_sweep(sweep / "sweep.json") if (sweep / "sweep.json").is_file() else None
    solver = (doc.solver if doc else None) or {}
    if (sweep / "selected_recipe.yaml").is_file():
        label = solver.get("selected") or "selected"
        rows.append((SELECTED, f"selected ({label})", sweep / "selected_recipe.yaml"))
    uniform = doc.best_uniform() if doc else {}
    if uniform.get("recipe"):
        path = Path(uniform["recipe"])
        path = path if path.is_absolute() else sweep / path
        if path.is_file():
            rows.append((UNIFORM, f"uniform baseline (knob {uniform.get('knob')})", path))
    return rows


def _recipe_body(recipe: Path | None) -> str | None:
    """A recipe's rules without its comment lines (the solver adds its message as a comment)."""
    if recipe is None:
        return None
    lines = recipe.read_text(encoding="utf-8").splitlines()
    return "\n".join(line for line in lines if not line.lstrip().startswith("#"))


def _accuracy(
    model, tokenizer, tasks: list[str], limit: int, backend=None
) -> tuple[float | None, list | None]:
    """(mean primary score over `tasks` (suites expanded), per-question records) with lm-eval;
    (None, None) when skipped. Records are [task:id, value] so tasks never mix question ids."""
    if not tasks or limit <= 0:
        return None, None
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
        backend=backend,
    )
    entries = [e for e in res["tasks"].values() if e.get("score") is not None]
    scores = [e["score"] for e in entries]
    records = [[f"{e['task']}:{q}", v] for e in entries for q, v in (e.get("per_doc") or [])]
    # A mean of task means equals the mean over questions only with one task (or equal sizes):
    # with records, state the accuracy over the questions themselves (what the interval is of).
    if records:
        return sum(v for _, v in records) / len(records), records
    return (sum(scores) / len(scores) if scores else None), None


def _probes(ccfg) -> dict[str, Probe]:
    settings = {
        "max_tokens": ccfg.probe_tokens,
        "seq_len": ccfg.seq_len,
        "batch_size": ccfg.batch_size,
        "autocast_bf16": ccfg.autocast_bf16,
        "doc_max_tokens": ccfg.doc_max_tokens,
    }
    heldout = getattr(ccfg, "heldout", None)
    return {n: Probe.named(n, role=ROLE, heldout=heldout, **settings) for n in PROBE_NAMES}


def _score_row(merger, tokenizer, probes, ccfg, row_id, label, recipe, layers) -> dict:
    if row_id == BASE:
        merger.apply_layer_t([0.0] * layers, other_t=0.0)
    elif recipe is None:
        merger.reset()
    else:
        merger.apply(load_recipe(recipe))
    row = {"id": row_id, "model": label, "recipe": str(recipe) if recipe else None, "docs": {}}
    for name, probe in probes.items():
        res = probe.score(merger.model, tokenizer)
        row[f"{name}_bpb"] = res.bpb
        row["docs"][name] = list(res.docs.nll)
    _mc_columns(row, merger.model, tokenizer, ccfg)
    return row


def _mc_columns(row: dict, model, tokenizer, ccfg) -> None:
    """The accuracy columns (general_mc, finance_mc) and their per-question records."""
    limit, mc, backend = int(ccfg.mc_limit), {}, getattr(ccfg, "lm_eval", None)
    row["general_mc"], mc["general_mc"] = _accuracy(
        model, tokenizer, list(ccfg.general_tasks), limit, backend
    )
    row["finance_mc"], mc["finance_mc"] = _accuracy(
        model, tokenizer, list(ccfg.finance_tasks), limit, backend
    )
    row["mc_records"] = mc


def _score_checkpoint(path: Path, tokenizer, probes, ccfg, row_id: str, label: str) -> dict:
    """A row for a model of its own (a replay baseline): loaded, scored like the merges, freed."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    row = {"id": row_id, "model": label, "recipe": None, "checkpoint": str(path), "docs": {}}
    for name, probe in probes.items():
        res = probe.score(model, tokenizer)
        row[f"{name}_bpb"] = res.bpb
        row["docs"][name] = list(res.docs.nll)
    _mc_columns(row, model, tokenizer, ccfg)
    return row


def compare_models(
    ccfg: CompareConfig,
    base: Path,
    adapted: Path,
    run_dir: Path,
    folder: Path,
    replays: dict[float, Path] | None = None,
) -> dict:
    """Score every row of the report's table on test-role text: base, plain CPT, the replay
    baselines (`replays`: ratio → checkpoint), the policies, the selected and uniform recipes."""
    merger = InMemoryMerger.from_pretrained(base, adapted)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(adapted)
    probes = _probes(ccfg)
    rows = []
    done: dict[str, dict] = {}  # recipe text → its row: the same recipe is scored once
    for row_id, label, recipe in _models(run_dir):
        t0 = time.perf_counter()
        text = _recipe_body(recipe)
        if text is not None and text in done:
            same = {"id": row_id, "model": label, "recipe": str(recipe), "seconds": 0.0}
            rows.append({**done[text], **same})
            continue
        row = _score_row(merger, tokenizer, probes, ccfg, row_id, label, recipe, merger.num_layers)
        row["seconds"] = round(time.perf_counter() - t0, 2)
        if text is not None:
            done[text] = row
        _log_row(row)
        rows.append(row)
    meta = _probe_meta(probes, tokenizer)
    families = _family_check(ccfg, merger, tokenizer, probes, meta, run_dir / "sweep", rows)
    del merger  # the replay checkpoints are loaded one at a time below
    for k, (ratio, path) in enumerate(sorted((replays or {}).items())):
        t0, label = time.perf_counter(), f"CPT + {100 * ratio:g}% general replay"
        row = _score_checkpoint(path, tokenizer, probes, ccfg, replay_id(ratio), label)
        row["seconds"] = round(time.perf_counter() - t0, 2)
        _log_row(row)
        rows.insert(2 + k, row)  # after base and plain CPT: rows[0] / rows[1] are the anchors
    _derive(rows)
    _intervals(rows, meta, int(ccfg.resamples), int(ccfg.seed))
    doc = {
        "schema_version": SCHEMA_VERSION,  # checked by spear_mm.pipeline.document.read_compare
        "text_role": ROLE,
        "rows": rows,
        "probe": {k: v for k, v in next(iter(meta.values())).items() if k in _SETTINGS},
        "probes": meta,
        "roles": role_records(getattr(ccfg, "heldout", None)),
        "families": families,
        "bootstrap": {"resamples": int(ccfg.resamples), "seed": int(ccfg.seed), "level": 0.95},
    }
    (folder / "compare.json").write_text(json.dumps(json_safe(doc), indent=1))
    from spear_mm.pipeline.plot import draw_table

    draw_table(rows, folder / "tradeoff.png")
    return {"rows": len(rows), "text_role": ROLE}


def _family_check(ccfg, merger, tokenizer, probes, meta, sweep_dir: Path, rows: list[dict]):
    """Each sweep family's selection-chosen point and the uniform line, re-scored on test-role
    text (spear_mm.pipeline.families); None when switched off or without a sweep."""
    if not ccfg.family_check or not (sweep_dir / "sweep.json").is_file():
        return None
    t0 = time.perf_counter()

    def score(recipe: Path) -> dict[str, list[float]]:
        merger.apply(load_recipe(recipe))
        return {n: list(p.score(merger.model, tokenizer).docs.nll) for n, p in probes.items()}

    anchors = {row["id"]: row["docs"] for row in rows if row["id"] in (BASE, ADAPTED)}
    nbytes = {name: m["bytes"] for name, m in meta.items()}
    check = family_check(
        read_sweep(sweep_dir / "sweep.json"),
        sweep_dir,
        score,
        anchors,
        nbytes,
        resamples=int(ccfg.resamples),
        seed=int(ccfg.seed),
    )
    if check is not None:
        check["seconds"] = round(time.perf_counter() - t0, 2)
        print(f"spear-mm run: [compare] {families_finding(check)}", flush=True)
    return check


def _log_row(row: dict) -> None:
    print(
        f"spear-mm run: [compare] {row['model']}: general bpb {row['general_bpb']:.4f}, "
        f"finance bpb {row['finance_bpb']:.4f} (test-role text)",
        flush=True,
    )


_SETTINGS = ("max_tokens", "seq_len", "doc_max_tokens", "role")


def _probe_meta(probes: dict[str, Probe], tokenizer) -> dict[str, dict]:
    """Each probe's settings and the ids / bytes / tokens of the documents it scored."""
    return {name: probe.documents(tokenizer) for name, probe in probes.items()}


def _intervals(rows: list[dict], meta: dict, resamples: int, seed: int) -> None:
    """Paired bootstrap intervals of every row's numbers, and of its difference from uniform."""
    g = ([r["docs"]["general"] for r in rows], meta["general"]["bytes"])
    f = ([r["docs"]["finance"] for r in rows], meta["finance"]["bytes"])
    kw = {"resamples": resamples, "seed": seed}
    for row, ci in zip(rows, evidence.bpb_table(g, f, **kw), strict=True):
        row["ci"] = ci
    for key, kind in (("general_mc", "recovered"), ("finance_mc", "gain_kept")):
        recs = [r["mc_records"].get(key) for r in rows]
        table = evidence.accuracy_table(recs, stream=key, kind=kind, **kw)
        for row, entry in zip(rows, table, strict=True):
            row["ci"][key] = entry["accuracy"] if entry else None
            row["ci"][f"{key}_{kind}"] = entry[kind] if entry else None
    uni = next((i for i, r in enumerate(rows) if r["id"] == UNIFORM), None)
    if uni is not None:
        for row, d in zip(rows, evidence.bpb_differences(g, f, uni, **kw), strict=True):
            row["vs_uniform"] = d


def _derive(rows: list[dict]) -> None:
    """Retention, gain kept and forgetting recovered of every row against base and adapted,
    with the sweep's definitions (`derive_scores`); an undefined ratio is written as null."""
    keys = ("general_bpb", "finance_bpb")
    base, adapted = ({k: r[k] for k in keys} for r in rows[:2])
    for row in rows:
        scores, _ = derive_scores({k: row[k] for k in keys}, base, adapted)
        row["general_retention"] = finite_or_none(scores["retention"])
        row["gain_kept"] = finite_or_none(scores["gain_kept"])
        row["forgetting_recovered"] = finite_or_none(scores["recovered"])
