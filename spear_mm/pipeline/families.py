"""Every recipe family against the uniform line on **test-role** text (docs/metrics.md).

The sweep picks each layer-aware family's best point on selection-role text (its verdict's
`best_knob`: the largest advantage over the uniform line at equal general score). Reading the
same tokens again to state that advantage would reuse the selection's luck, so here the chosen
point of every family, every uniform point of the sweep and the base and adapted anchors are
scored once more on test-role documents, and the advantage — domain gain kept minus the uniform
line's at the same general score (`spear_mm.sweep.frontier.compare_families`) — gets its paired
95% bootstrap interval over those documents. A family *beats* uniform only when that interval
lies above 0.

Bits per byte only (no MC columns): the advantage is defined on the two probes.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

from spear_mm.eval.evidence import probe_draws
from spear_mm.sweep import evidence
from spear_mm.sweep import frontier as fr
from spear_mm.sweep.document import SweepDoc

ROLE = "test"
PROBES = ("general", "finance")

Scorer = Callable[[Path], dict[str, list[float]]]  # recipe file → probe → per-document NLL


def chosen_points(sweep: SweepDoc) -> tuple[list[dict], dict[str, dict]]:
    """(the sweep's uniform points, {family: its selection-chosen point}), each with a recipe."""

    def has_recipe(p: dict) -> bool:
        return bool(p.get("recipe"))

    uniform = [p for p in sweep.points if p.get("family") == "uniform" and has_recipe(p)]
    chosen = {}
    for fam, v in ((sweep.verdict or {}).get("families") or {}).items():
        knob = v.get("best_knob")
        if knob is None:
            continue
        match = [
            p
            for p in sweep.points
            if p.get("family") == fam and has_recipe(p) and _same(p.get("knob"), knob)
        ]
        if match:
            chosen[fam] = match[0]
    return uniform, chosen


def _same(a, b) -> bool:
    return a is not None and math.isclose(float(a), float(b), rel_tol=0, abs_tol=1e-9)


def family_check(
    sweep: SweepDoc,
    sweep_dir: Path,
    score: Scorer,
    anchors: dict[str, dict[str, list[float]]],
    doc_bytes: dict[str, list[int]],
    *,
    resamples: int,
    seed: int,
) -> dict | None:
    """The test-role verdict of every family (None when the sweep has no family to check).

    `anchors` holds the base's and the adapted model's per-document NLL ({"base": {probe: …},
    "adapted": …}) from the table, `doc_bytes` each probe's document bytes. The draws use the
    table's seed and probe streams, so they pair with its intervals.
    """
    uniform, chosen = chosen_points(sweep)
    if not chosen or not uniform:
        return None
    labels = ["base", "adapted"]
    nll = {probe: [anchors["base"][probe], anchors["adapted"][probe]] for probe in PROBES}
    scored: dict[str, dict[str, list[float]]] = {}  # recipe file → docs: each file scored once
    for p in [*uniform, *chosen.values()]:
        path = Path(p["recipe"]) if Path(p["recipe"]).is_absolute() else sweep_dir / p["recipe"]
        key = str(path)
        if key not in scored:
            scored[key] = score(path)
        labels.append(f"{p['family']}@{p['knob']:.3g}")
        for probe in PROBES:
            nll[probe].append(scored[key][probe])
    point, draws = {}, {}
    for probe in PROBES:
        point[probe], draws[probe] = probe_draws(
            nll[probe], doc_bytes[probe], probe, resamples, seed
        )
    rep = {
        "point": evidence.derived(point["general"], point["finance"], 1, 0),
        "draws": evidence.derived(draws["general"], draws["finance"], 1, 0),
        "n": {probe: len(doc_bytes[probe]) for probe in PROBES},
    }
    # Forgetting recovered is linear in general bpb (the line is interpolated in it); without
    # forgetting it is undefined, and retention orders the points the same way.
    y = "recovered" if float(rep["point"]["forgetting"]) > 0 else "retention"
    n_uni = 2 + len(uniform)
    fam_index = {fam: n_uni + k for k, fam in enumerate(chosen)}

    def shape(ys, gains):
        line = [(ys[i], gains[i]) for i in range(n_uni)]
        fams = {f: [(chosen[f]["knob"], ys[i], gains[i])] for f, i in fam_index.items()}
        return line, fams

    line, fams = shape(rep["point"][y], rep["point"]["gain_kept"])
    floor = evidence.noise_floor(rep, seed)
    if floor["gain"]["measurable"]:
        reps = [
            shape(rep["draws"][y][b], rep["draws"]["gain_kept"][b])
            for b in range(rep["draws"][y].shape[0])
        ]
        out = fr.compare_families(line, fams, replicates=reps, seed=seed, n=min(rep["n"].values()))
    else:
        out = fr.compare_families(line, fams, seed=seed)  # no replicates: nothing is called
        out["summary"] = (
            "Not measurable on test-role text at this probe size: the adapted model's finance "
            f"gain has no 95% interval above 0 ({floor['gain']['value']:+.4f} bpb), so no "
            "family's advantage in gain kept can be told from noise."
        )
    selection = (sweep.verdict or {}).get("families") or {}
    for fam, rec in out["families"].items():
        i = fam_index[fam]
        rec["selection_call"] = (selection.get(fam) or {}).get("call")
        rec["test_gain_kept"] = float(rep["point"]["gain_kept"][i])
        rec[f"test_{y}"] = float(rep["point"][y][i])
    out.update(
        {
            "text_role": ROLE,
            "chosen_on": "selection",
            "axis": f"domain gain kept at equal {y} (uniform line interpolated, test-role text)",
            "points": labels,
            "noise_floor": floor,
        }
    )
    return out


def families_finding(check: dict | None) -> str | None:
    """The report's sentence: every family's test-role advantage over uniform, with intervals."""
    if not check:
        return None
    knobs = ", ".join(
        f"{fam} {rec['best_knob']:.3g}"
        for fam, rec in check["families"].items()
        if rec.get("best_knob") is not None
    )
    return (
        "Families vs uniform on test-role text (each family's point chosen on selection text: "
        f"knob {knobs or 'none'}; {check['axis']}): {check['summary']}"
    )
