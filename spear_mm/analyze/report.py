"""Write analyze's outputs into out=DIR: analysis.json, layer_impact.png, recipes/, freeze/.

Each file is written to a temp name and renamed into place (recipes/ and freeze/ as whole
folders), so an interrupted run never leaves a half-written output.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import yaml

from spear_mm.analyze.document import SCHEMA_VERSION
from spear_mm.analyze.policies import POLICIES, freeze_plan_dict, recipe_dict, recipe_header
from spear_mm.analyze.validate import ScoreSpec, ranking
from spear_mm.io.atomic import atomic_dir, atomic_write_text


def _fingerprint(folder: Path) -> str | None:
    try:
        from spear_mm.eval.fingerprint import folder_fingerprint

        return folder_fingerprint(folder)
    except ImportError:  # eval not installed in a trimmed build: the path still identifies it
        return None


def _versions() -> dict:
    from spear_mm.runinfo import versions

    return versions()


def write_policies(
    out: Path,
    score: list[float],
    base: Path,
    adapted: Path,
    tied: bool,
    unchanged: list[int] = (),  # type: ignore[assignment]
) -> dict:
    """recipes/<policy>.yaml and freeze/<policy>.yaml; returns what each policy does."""
    described = {}
    with atomic_dir(out / "recipes", force=True) as rdir:
        for p in POLICIES:
            recipe = recipe_dict(score, p, str(base), str(adapted), unchanged=unchanged)
            text = recipe_header(p, unchanged) + yaml.safe_dump(recipe, sort_keys=False)
            (rdir / f"{p.name}.yaml").write_text(text)
            described[p.name] = {"summary": p.summary, "layer_t": recipe["rules"][0]["t"]}
    with atomic_dir(out / "freeze", force=True) as fdir:
        for p in POLICIES:
            plan = freeze_plan_dict(score, p, tied, unchanged)
            (fdir / f"{p.name}.yaml").write_text(yaml.safe_dump(plan, sort_keys=False))
            described[p.name]["freeze_layers"] = plan["layers"]
    return described


def write_outputs(
    out: Path,
    cfg,
    base: Path,
    adapted: Path,
    weights: dict,
    spec: ScoreSpec,
    score: list[float],
    abl: dict | None,
    val: dict | None,
    fitted: ScoreSpec | None,
    sanity: dict | None = None,
) -> dict:
    """Assemble analysis.json, draw the plot, write the policies; returns the JSON dict."""
    out.mkdir(parents=True, exist_ok=True)
    summary = weights["summary"]
    unchanged = sanity["unchanged_layers"] if sanity else []
    policies = write_policies(out, score, base, adapted, summary["tied_embeddings"], unchanged)
    doc = {
        "schema_version": SCHEMA_VERSION,  # checked by spear_mm.analyze.document.read_analysis
        "inputs": {
            "base": str(base),
            "adapted": str(adapted),
            "base_fingerprint": _fingerprint(base),
            "adapted_fingerprint": _fingerprint(adapted),
        },
        "versions": _versions(),
        "settings": {
            "svd_mode": cfg.svd_mode,
            "top_k": cfg.top_k,
            "device": summary["device"],
            "seed": cfg.seed,
        },
        "summary": summary,
        "timing": {
            "weight_seconds": weights["seconds"],
            "ablation_seconds": abl["seconds"] if abl else None,
            "cost_ratio_weight_over_ablation": weights["seconds"] / abl["seconds"] if abl else None,
        },
        "score_spec": spec.to_json(),
        "combined_score": score,
        "layer_ranking": ranking(score),
        "sanity": sanity,
        "layers": weights["features"],
        "kinds": weights["kinds"],
        "kind_table_rel_drift": weights["kind_table"],
        "tensors": [r.to_json() for r in weights["records"]],
        "ablation": abl,
        "validation": val,
        "fitted_spec": fitted.to_json() if fitted else None,
        "policies": policies,
    }
    atomic_write_text(out / "analysis.json", json.dumps(doc, indent=1) + "\n")
    if fitted:
        atomic_write_text(out / "score_spec.json", json.dumps(fitted.to_json(), indent=1) + "\n")
    if cfg.plot:
        from spear_mm.analyze.plot import plot_layer_impact

        tmp = out / f".layer_impact.tmp-{os.getpid()}.png"
        plot_layer_impact(doc, tmp)
        os.replace(tmp, out / "layer_impact.png")
    return doc
