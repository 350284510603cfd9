"""Turn the stages' outputs into the report: the table, the findings in plain words, the costs.

Every sentence is computed from the numbers, including the ones that say where SPEAR-MM does not
beat a baseline; nothing here is hard-coded about the outcome.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf

from spear_mm.analyze.document import AnalysisDoc, read_analysis
from spear_mm.pipeline.config import RunConfig
from spear_mm.pipeline.document import (
    ADAPTED,
    BASE,
    SELECTED,
    UNIFORM,
    CompareDoc,
    read_compare,
)
from spear_mm.pipeline.families import families_finding
from spear_mm.pipeline.gate import gate_finding, study_gate
from spear_mm.pipeline.report import Report, fmt, interval, pct, ratio_notes, ratio_text
from spear_mm.runinfo import versions
from spear_mm.sweep.document import SweepDoc, read_sweep

PAPER_RECOVERED = 0.71  # 69.7% → 91.2% retention = 71% of the forgetting recovered
PAPER_GAIN_KEPT = 0.94
# The paper's two numbers are benchmark accuracies (GSM8K / ARC, finance tasks): only
# accuracy-type columns are compared with them (docs/metrics.md).


def _ci(row: dict, key: str) -> dict | None:
    return (row.get("ci") or {}).get(key)


def cpt_finding(base: dict, adapted: dict) -> str:
    """What plain CPT did to each probe, with the paired interval of the change (test text)."""
    parts = []
    for probe, ratio_key, what in (
        ("finance", "gain_kept", "domain gain"),
        ("general", "forgetting_recovered", "forgetting"),
    ):
        b, a = base[f"{probe}_bpb"], adapted[f"{probe}_bpb"]
        den = (_ci(adapted, ratio_key) or {}).get("denominator")
        change = interval(den, sign=True) if den else f"{a - b:+.4f}"
        entry = _ci(adapted, ratio_key) or {}
        tail = ""
        if not entry.get("measurable", True):
            wrong = entry.get("reason", "").startswith("the adapted model moved the other way")
            tail = (
                f" — no {what}: it moved the other way"
                if wrong
                else (f" — no {what} measurable at this probe size")
            )
        parts.append(f"{probe} bits-per-byte {b:.4f} → {a:.4f} (change {change}){tail}")
    return "Plain CPT moved " + " and ".join(parts) + " (test-role text, 95% intervals)."


def selected_finding(sel: dict | None, target: str) -> str:
    if sel is None:
        return f"The solver found no recipe that meets the target ({target})."
    return (
        f"The selected recipe ({sel['model']}; chosen on selection-role text for target "
        f"{target}) on test-role text: forgetting recovered "
        f"{ratio_text(_ci(sel, 'forgetting_recovered'))}, domain gain kept "
        f"{ratio_text(_ci(sel, 'gain_kept'))} (bits-per-byte ratios)."
    )


def paper_finding(sel: dict | None) -> str:
    """Compare with the paper's 71% / 94% only on accuracy-type columns (MC accuracy)."""
    text = (
        f"The paper's headline ({pct(PAPER_RECOVERED)} of the forgetting recovered with "
        f"{pct(PAPER_GAIN_KEPT)} of the domain gain kept) is measured on benchmark accuracies; "
        "the bits-per-byte ratios above are a different metric and are not compared with it."
    )
    if sel is None:
        return text
    rec, gain = _ci(sel, "general_mc_recovered"), _ci(sel, "finance_mc_gain_kept")
    if not rec and not gain:
        return text + " No MC accuracy columns were scored (compare.mc_limit=0)."
    if not rec or not gain:
        scored, missing = (
            ("forgetting recovered", "finance") if rec else ("finance gain kept", "general")
        )
        return (
            text + f" On MC accuracy (test role) the selected recipe's {scored} is "
            f"{ratio_text(rec or gain)}; no {missing} MC column was scored "
            f"(compare.{missing}_tasks is empty), so the paper's headline cannot be checked."
        )
    text += (
        f" On MC accuracy (test role) the selected recipe's forgetting recovered is "
        f"{ratio_text(rec)} and its finance gain kept {ratio_text(gain)}"
    )
    if not (rec.get("measurable") and gain.get("measurable")):
        return text + ": the paper's headline cannot be checked at this probe size."
    lo_rec, lo_gain = rec["interval"]["lo"], gain["interval"]["lo"]
    hi_rec, hi_gain = rec["interval"]["hi"], gain["interval"]["hi"]
    if (
        lo_rec is not None
        and lo_gain is not None
        and lo_rec >= PAPER_RECOVERED
        and lo_gain >= PAPER_GAIN_KEPT
    ):
        return text + ": both intervals lie at or above the paper's headline."
    if (
        hi_rec is not None
        and hi_gain is not None
        and (hi_rec < PAPER_RECOVERED or hi_gain < PAPER_GAIN_KEPT)
    ):
        return text + ": below the paper's headline (an interval lies under it)."
    return text + ": no evidence either way against the paper's headline (intervals straddle it)."


def uniform_finding(sel: dict | None, uni: dict | None, selected_family: str | None) -> str | None:
    if not sel or not uni:
        return None
    if selected_family == "uniform":
        return (
            f"The solver's best recipe for this target is uniform interpolation of all layers "
            f"({sel['model']}): no layer-aware recipe kept more domain gain at the target on "
            "selection-role text, so here SPEAR-MM's layer awareness does not beat the uniform "
            "(WiSE-FT) baseline."
        )
    d = sel.get("vs_uniform") or {}
    verdict = {
        "better": "beats uniform",
        "worse": "loses to uniform",
        "trade-off": "trades one axis for the other against uniform",
    }.get(d.get("call"), "no evidence either way against uniform")
    return (
        f"Against the best uniform interpolation that meets the same target ({uni['model']}), "
        f"on test-role text: general bpb {interval(d.get('general_bpb'), sign=True)}, finance "
        f"bpb {interval(d.get('finance_bpb'), sign=True)} (selected − uniform; lower is better) "
        f"— the selected recipe {verdict}."
    )


def _sanity_lines(analysis: AnalysisDoc) -> list[str]:
    """The analyzer's own sanity warnings (unchanged / far-out layers vs the ranking)."""
    sanity = analysis.sanity or {}
    return [f"Analyzer warning: {w}." for w in sanity.get("warnings") or []]


def rho_evidence(analysis: AnalysisDoc, seed: int = 0) -> dict | None:
    """ρ intervals from the ablation's per-document records (None without them)."""
    per_doc = (analysis.ablation or {}).get("per_doc")
    layers, score = analysis.layers, analysis.combined_score
    if not per_doc or not score or not layers or "general" not in per_doc.get("probes", {}):
        return None
    from spear_mm.analyze.uncertainty import rho_intervals

    depth = [f["depth"] for f in layers]
    return rho_intervals(score, depth, per_doc, probe="general", seed=seed)


def analyzer_findings(analysis: AnalysisDoc) -> tuple[list[str], list[dict]]:
    val = analysis.validation
    if not val:
        return (
            [
                "The analyzer ran without the ablation: its ranking is not validated in this run "
                "(set analyze.ablation=true).",
                *_sanity_lines(analysis),
            ],
            [],
        )
    rho, depth = val.get("rho_combined"), val.get("rho_depth")
    ev = rho_evidence(analysis)
    if ev is None:
        lines = [
            f"The analyzer's combined weight-only score ranks layers with Spearman ρ = "
            f"{fmt(rho, 2)} against the ablation's general harm, depth ρ = {fmt(depth, 2)}; this "
            "analysis.json has no per-document records, so no interval and no verdict."
        ]
    else:
        probe = (analysis.ablation.get("per_doc") or {}).get("probes", {}).get("general", {})
        lines = [
            f"The analyzer's combined weight-only score ranks layers with Spearman ρ = "
            f"{interval(ev['rho_combined'].record(), digits=2)} against the ablation's general "
            f"harm; the depth baseline (earliest layers first) reaches ρ = "
            f"{interval(ev['rho_depth'].record(), digits=2)}; difference "
            f"{interval(ev['difference'].record(), digits=2, sign=True)} — the weight-only score "
            f"{ev['call']} (95% intervals over the ablation's {ev['difference'].n} "
            f"calibration-role documents, {probe.get('max_tokens', '?')} tokens)."
        ]
    lines += _sanity_lines(analysis)
    table = [
        {
            "signal": "combined weight-only score",
            "rho": rho,
            "interval": ev["rho_combined"].record() if ev else None,
            "note": "shipped ranking",
        },
        {
            "signal": "depth (earliest first)",
            "rho": depth,
            "interval": ev["rho_depth"].record() if ev else None,
            "note": "baseline",
        },
    ]
    given = val.get("rho_signals_given_depth") or {}
    for name, value in sorted(
        (val.get("rho_signals") or {}).items(), key=lambda kv: -abs(kv[1] or 0)
    ):
        if name != "depth":
            table.append(
                {
                    "signal": name,
                    "rho": value,
                    "note": f"ρ given depth {fmt(given.get(name), 2)}" if name in given else "",
                }
            )
    timing = analysis.timing
    ratio = timing.get("cost_ratio_weight_over_ablation")
    if ratio is not None:
        lines.append(f"Weight-only analysis cost {pct(ratio)} of the per-layer ablation's time.")
    return lines, table


def _role_counts(compare: CompareDoc) -> str:
    parts = []
    for name, rec in compare.roles.items():
        n = {r: len(ids) for r, ids in rec["roles"].items()}
        parts.append(
            f"{name}: {n.get('calibration', 0)} / {n.get('selection', 0)} / {n.get('test', 0)} "
            f"documents ({len(rec.get('excluded', {}))} excluded as near-duplicates of training)"
        )
    return "; ".join(parts) or "no role record"


def build_report(
    cfg: RunConfig, run_dir: Path, markers: list[dict], fresh_seconds: float
) -> Report:
    """The report of a finished study, from its three stage documents (read by their readers;
    table rows looked up by their stable ids, never by their display labels)."""
    compare = read_compare(run_dir / "compare" / "compare.json")
    rows = compare.rows
    analysis = read_analysis(run_dir / "analyze" / "analysis.json")
    sweep: SweepDoc = read_sweep(run_dir / "sweep" / "sweep.json")
    solver = sweep.solver or {}
    target = f"{solver.get('metric')} ≥ {solver.get('target')}" if solver else "none"
    base, adapted = compare.row(BASE), compare.row(ADAPTED)
    sel, uni = compare.row(SELECTED), compare.row(UNIFORM)
    findings = [cpt_finding(base, adapted)] if base and adapted else []
    gate = study_gate(adapted, uni)
    findings.append(gate_finding(gate))
    findings.append(selected_finding(sel, target))
    findings.append(paper_finding(sel))
    if solver.get("message"):
        findings.append(f"Solver: {solver['message']}")
    if (u := uniform_finding(sel, uni, sweep.selected_family())) is not None:
        findings.append(u)
    verdict = sweep.verdict or {}
    if verdict.get("summary"):
        findings.append(
            "Sweep verdict (layer-aware families vs the uniform line, selection-role text): "
            f"{verdict['summary']}"
        )
    if (fam := families_finding(compare.families)) is not None:
        findings.append(fam)
    a_lines, table = analyzer_findings(analysis)
    findings += a_lines
    findings += [f"Note: {n}" for n in sweep.notes]
    costs = [
        {"stage": m["stage"], "seconds": m["seconds"], "cached": m.get("cached", False)}
        for m in markers
    ]
    summary = [
        f"Model: {cfg.model.name}; domain corpus: {cfg.data.domain}; "
        f"CPT: {cfg.trainer.max_steps} steps at lr {cfg.trainer.lr}, seed {cfg.seed}.",
        "Text roles (spear_mm.io.roles): the analyzer's ablation read calibration documents, "
        "the sweep and solver selection documents, this table test documents — "
        f"{_role_counts(compare)}; ids in compare/compare.json `roles`.",
        f"Probes: bits per byte on held-out general and finance text "
        f"({compare.probe.get('max_tokens', '?')} tokens each); intervals: paired "
        f"bootstrap, {compare.bootstrap.get('resamples', '?')} resamples.",
        f"Wall time of this invocation: {fresh_seconds:.0f} s "
        f"(stages first computed in {sum(c['seconds'] for c in costs):.0f} s).",
    ]
    plots = [
        ("Every model of the table, test-role text, 95% intervals", "compare/tradeoff.png"),
        ("Trade-off: general vs domain (sweep, selection-role text)", "sweep/frontier.png"),
        ("Layer impact (analyzer)", "analyze/layer_impact.png"),
    ]
    return Report(
        title=cfg.title,
        summary=summary,
        rows=rows,
        findings=findings,
        table_notes=ratio_notes(adapted),
        ranking_table=table,
        stage_costs=costs,
        plots=plots,
        versions=versions(),
        config_yaml=OmegaConf.to_yaml(cfg, resolve=True),
    )
