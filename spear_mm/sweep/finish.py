"""After the points: solver, frontier, verdict, plot and the files in out=DIR."""

from __future__ import annotations

import logging
import math

from spear_mm.io.atomic import atomic_write_text, json_safe
from spear_mm.sweep import evidence, report
from spear_mm.sweep import frontier as fr
from spear_mm.sweep.config import SweepConfig
from spear_mm.sweep.document import SCHEMA_VERSION
from spear_mm.sweep.points import SweepPoint
from spear_mm.sweep.runner import Sweep, evaluate_point, snap
from spear_mm.sweep.solver import Solution, solve

log = logging.getLogger("spear_mm.sweep")
SELECTED = "selected_recipe.yaml"


def run_solver(sw: Sweep) -> Solution | None:
    """Bisect every family around the target, add the refined points, pick the best."""
    target = sw.cfg.target()
    if target is None:
        return None
    metric, value = target

    def evaluate(family: str, knob: float) -> SweepPoint:
        return evaluate_point(sw, family, knob, "refined")

    recipe_points = [p for p in sw.points if p.family != "replay"]
    sol = solve(recipe_points, metric, value, evaluate, steps=sw.cfg.refine_steps, snap=snap(sw))
    sw.points.extend(sol.refined)
    log.info("%s", sol.message)
    return sol


def general_axis(sw: Sweep, wanted: str = "recovered") -> str:
    """`wanted`, unless it is forgetting recovered and that is undefined (the adapted model did
    not forget): then retention, which orders points the same way and is always defined."""
    if wanted == "recovered" and not math.isfinite(sw.by_family("adapted").get("recovered")):
        return "retention"
    return wanted


def y_axis(sw: Sweep) -> str:
    """The frontier's y metric: `axis`, else the target's metric, else forgetting recovered."""
    if sw.cfg.axis != "auto":
        return general_axis(sw, sw.cfg.axis)
    target = sw.cfg.target()
    return general_axis(sw, target[0] if target else "recovered")


def verdict(sw: Sweep) -> dict:
    """Layer-aware families vs the uniform envelope at an equal general score, with the paired
    bootstrap interval of each family's advantage (selection-role documents)."""
    y = general_axis(sw)
    uniform = [p for p in sw.points if p.family in ("uniform", "adapted", "base")]
    line = [(p.get(y), p.get("gain_kept")) for p in uniform]
    fams = {
        f: [(p.knob, p.get(y), p.get("gain_kept")) for p in sw.points if p.family == f]
        for f in sw.families
        if f != "uniform"
    }
    resamples, seed = int(sw.cfg.resamples), int(sw.cfg.seed)
    rep = evidence.replicates(sw, resamples, seed)
    floor = evidence.noise_floor(rep, seed)
    if not floor["gain"]["measurable"]:
        out = fr.compare_families(line, fams, seed=seed)  # no replicates: nothing is called
        out["summary"] = (
            f"Not measurable at this probe size: the adapted model's finance gain "
            f"({_iv_text(floor['gain'])} bpb, over {rep['n']['finance']} documents) has no 95% "
            "interval above 0, so domain gain kept — and any family's advantage in it — is noise "
            "here; use larger probes."
        )
    else:
        reps = evidence.verdict_replicates(sw, rep, y, fams)
        out = fr.compare_families(line, fams, replicates=reps, seed=seed, n=min(rep["n"].values()))
    out["axis"] = f"domain gain kept at equal {y} (uniform envelope interpolated)"
    out["noise_floor"] = floor
    out["text_role"] = "selection"
    return out


def _iv_text(iv: dict) -> str:
    if iv.get("lo") is None or iv.get("hi") is None:
        return f"{iv['value']:+.4f}, no interval"
    return f"{iv['value']:+.4f} [95% CI {iv['lo']:+.4f}, {iv['hi']:+.4f}]"


def write_selected(sw: Sweep, sol: Solution) -> str | None:
    """Copy the selected point's recipe to selected_recipe.yaml with the solver's message."""
    if sol.selected is None or sol.selected.recipe is None:
        return None
    text = (sw.out / sol.selected.recipe).read_text(encoding="utf-8")
    head = f"# selected by spear-mm sweep: {sol.message}\n"
    atomic_write_text(sw.out / SELECTED, head + text)
    return SELECTED


def materialize(sw: Sweep) -> dict | None:
    """Write the selected model into out/merged through the merge executor."""
    from spear_mm.merge.executor import run_merge
    from spear_mm.merge.recipe import load_recipe

    recipe = load_recipe(sw.out / SELECTED)
    merged = run_merge(recipe, sw.out / "merged", force=sw.cfg.force, progress=False)
    return {"folder": "merged", "elapsed_s": merged.get("elapsed_s")}


def solution_record(sol: Solution | None, selected_file: str | None) -> dict | None:
    if sol is None:
        return None
    return {
        "metric": sol.metric,
        "target": sol.target,
        "status": sol.status,
        "message": sol.message,
        "selected": sol.selected.label if sol.selected else None,
        "selected_recipe": selected_file,
        "selected_scores": dict(sol.selected.scores) if sol.selected else None,
        "refined_points": len(sol.refined),
        "best_per_family": sol.family_best,
    }


def frontier_indices(sw: Sweep, y: str) -> list[int]:
    return fr.pareto_front([(p.get("gain_kept"), p.get(y)) for p in sw.points])


def write_outputs(sw: Sweep, sol: Solution | None) -> dict:
    """sweep.json, sweep.csv, frontier.png, selected_recipe.yaml (+ out/merged)."""
    y = y_axis(sw)
    front = frontier_indices(sw, y)
    selected_file = write_selected(sw, sol) if sol else None
    doc = {
        "schema_version": SCHEMA_VERSION,  # checked by spear_mm.sweep.document.read_sweep
        "base": str(sw.base_dir),
        "adapted": str(sw.adapted_dir),
        "analysis": sw.cfg.analysis,
        "ranking": _ranking_record(sw),
        "families": sw.families,
        "knob": "0 = adapted (t = 1 everywhere), 1 = base (t = 0); see docs/sweeps.md",
        "frontier_axes": ["gain_kept", y],
        "frontier": [sw.points[i].label for i in front],
        "text_role": "selection",
        "probes": sw.session.scorer.doc_meta,
        "verdict": verdict(sw),
        "solver": solution_record(sol, selected_file),
        "timings": report.timing_summary(sw.points),
        "notes": sw.notes + _sanity_notes(sw),
        "points": [report.point_record(p, i in front) for i, p in enumerate(sw.points)],
    }
    if sw.cfg.materialize and selected_file:
        doc["materialized"] = materialize(sw)
    report.write_csv(sw.out / "sweep.csv", sw.points, set(front))
    report.write_json(sw.out / "sweep.json", json_safe(doc))
    if sw.cfg.plot:
        from spear_mm.sweep.plot import draw_frontier

        draw_frontier(
            sw.points,
            sw.out / "frontier.png",
            y=y,
            frontier=[sw.points[i] for i in front],
            target=sw.cfg.target(),
            selected=sol.selected if sol else None,
        )
    return doc


def _ranking_record(sw: Sweep) -> dict | None:
    if sw.ranking is None:
        return None
    return {
        "source": sw.ranking.source,
        "order": list(sw.ranking.order),
        "scores": list(sw.ranking.scores) if sw.ranking.scores else None,
    }


def _sanity_notes(sw: Sweep) -> list[str]:
    notes = []
    adapted = sw.by_family("adapted")
    if adapted.get("retention") >= 1.0:
        notes.append(
            "the adapted model did not lose general ability on the probe "
            "(retention >= 1): forgetting recovered is undefined"
        )
    better = [p.label for p in sw.points if p.get("retention") > 1.0]
    if better:
        notes.append(
            f"{len(better)} point(s) score better than the base on general text "
            f"(retention > 1), e.g. {better[0]}: reported as they are"
        )
    return notes


def run_sweep(cfg: SweepConfig) -> dict:
    """The whole sweep for a validated config; returns sweep.json's dict."""
    from spear_mm.sweep.runner import baselines, grid, setup

    sw = setup(cfg)
    baselines(sw)
    grid(sw)
    sol = run_solver(sw)
    return write_outputs(sw, sol)
