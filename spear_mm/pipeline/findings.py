"""Turn the stages' outputs into the report: the table, the findings in plain words, the costs.

Every sentence is computed from the numbers, including the ones that say where SPEAR-MM does not
beat a baseline; nothing here is hard-coded about the outcome.
"""

from __future__ import annotations

import json
from pathlib import Path

from omegaconf import OmegaConf

from spear_mm.pipeline.report import Report, fmt, pct
from spear_mm.runinfo import versions

PAPER_RECOVERED = 0.71  # 69.7% → 91.2% retention = 71% of the forgetting recovered
PAPER_GAIN_KEPT = 0.94


# ρ differences below this are inside the probe noise measured here (docs/analyzer.md).
RHO_MARGIN = 0.05
# An ablation with fewer probe tokens than this is noisy: at 2048 tokens its general-harm ranking
# agreed with an 8192-token ablation of the same pair only at ρ 0.69 (docs/benchmarks.md, Analyze).
PRECISE_PROBE_TOKENS = 8192
SMALL_PROBE_RHO = 0.69


def _versus_depth(rho: float | None, depth: float | None) -> str:
    if rho is None or depth is None:
        return "cannot be compared with depth"
    if rho > depth + RHO_MARGIN:
        return "beats depth"
    if rho >= depth - RHO_MARGIN:
        return f"ties with depth (within {RHO_MARGIN} of it: no evidence either way)"
    return "does not beat depth"


def _read(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def _row(rows: list[dict], prefix: str) -> dict | None:
    return next((r for r in rows if r["model"].startswith(prefix)), None)


def cpt_finding(base: dict, adapted: dict) -> str:
    g0, g1, f0, f1 = (
        base["general_bpb"],
        adapted["general_bpb"],
        base["finance_bpb"],
        adapted["finance_bpb"],
    )
    fin = "lowered" if f1 < f0 else "did not lower"
    gen = "raised" if g1 > g0 else "did not raise"
    text = (
        f"Plain CPT {fin} finance bits-per-byte ({f0:.4f} → {f1:.4f}, {100 * (f1 - f0) / f0:+.1f}%) "
        f"and {gen} general bits-per-byte ({g0:.4f} → {g1:.4f}, {100 * (g1 - g0) / g0:+.1f}%)"
    )
    if g1 <= g0:
        text += ": there is no forgetting on this probe to recover, so forgetting recovered is undefined"
    return text + "."


def selected_finding(sel: dict | None, target: str) -> str:
    if sel is None:
        return f"The solver found no recipe that meets the target ({target})."
    rec, gain = sel.get("forgetting_recovered"), sel.get("gain_kept")
    meets = (
        rec is not None and gain is not None and rec >= PAPER_RECOVERED and gain >= PAPER_GAIN_KEPT
    )
    verdict = "meets" if meets else "does not meet"
    return (
        f"The selected recipe ({sel['model']}, target {target}) recovers {pct(rec)} of the general "
        f"forgetting and keeps {pct(gain)} of the domain gain; it {verdict} the paper's scale-free "
        f"headline (≥ {pct(PAPER_RECOVERED)} recovered with ≥ {pct(PAPER_GAIN_KEPT)} of the gain kept)."
    )


def uniform_finding(sel: dict | None, uni: dict | None) -> str | None:
    if not sel or not uni:
        return None
    if "(uniform@" in sel["model"]:
        return (
            f"The solver's best recipe for this target is uniform interpolation of all layers "
            f"({sel['model']}): no layer-aware recipe kept more domain gain at the target, so "
            "here SPEAR-MM's layer awareness does not beat the uniform (WiSE-FT) baseline."
        )
    d_gain = (sel.get("gain_kept") or 0) - (uni.get("gain_kept") or 0)
    d_rec = (sel.get("forgetting_recovered") or 0) - (uni.get("forgetting_recovered") or 0)
    better = d_gain >= 0 and d_rec >= 0 and (d_gain > 0 or d_rec > 0)
    return (
        f"Against the best uniform interpolation that meets the same target ({uni['model']}): "
        f"{'+' if d_gain >= 0 else ''}{100 * d_gain:.1f} points of gain kept and "
        f"{'+' if d_rec >= 0 else ''}{100 * d_rec:.1f} points of forgetting recovered — "
        + (
            "the selected recipe dominates it."
            if better
            else "the selected recipe does not dominate it."
        )
    )


def _sanity_lines(analysis: dict) -> list[str]:
    """The analyzer's own sanity warnings (unchanged / far-out layers vs the ranking)."""
    sanity = analysis.get("sanity") or {}
    return [f"Analyzer warning: {w}." for w in sanity.get("warnings") or []]


def analyzer_findings(analysis: dict) -> tuple[list[str], list[dict]]:
    val = analysis.get("validation")
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
    lines = [
        f"The analyzer's combined weight-only score ranks layers with Spearman ρ = {fmt(rho, 2)} "
        f"against the ablation's general harm; the depth baseline (earliest layers first) reaches "
        f"ρ = {fmt(depth, 2)}: the weight-only score {_versus_depth(rho, depth)}.",
        *_sanity_lines(analysis),
    ]
    tokens = ((analysis.get("ablation") or {}).get("probe") or {}).get("max_tokens")
    if tokens is not None and tokens < PRECISE_PROBE_TOKENS:
        lines.append(
            f"Caution: the ablation used {tokens}-token probes. At 2048 tokens an ablation's "
            f"ranking agreed with an {PRECISE_PROBE_TOKENS}-token one of the same pair only at "
            f"ρ {SMALL_PROBE_RHO}, so ρ values here are capped near that and differences of ~0.1 "
            f"are noise; rerun with analyze.probe.max_tokens={PRECISE_PROBE_TOKENS} to judge a "
            "ranking."
        )
    table = [
        {"signal": "combined weight-only score", "rho": rho, "note": "shipped ranking"},
        {"signal": "depth (earliest first)", "rho": depth, "note": "baseline"},
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
    timing = analysis.get("timing") or {}
    ratio = timing.get("cost_ratio_weight_over_ablation")
    if ratio is not None:
        lines.append(f"Weight-only analysis cost {pct(ratio)} of the per-layer ablation's time.")
    return lines, table


def build_report(cfg, run_dir: Path, markers: list[dict], fresh_seconds: float) -> Report:
    compare = _read(run_dir / "compare" / "compare.json")
    rows = compare.get("rows", [])
    analysis = _read(run_dir / "analyze" / "analysis.json")
    sweep = _read(run_dir / "sweep" / "sweep.json")
    solver = sweep.get("solver") or {}
    target = f"{solver.get('metric')} ≥ {solver.get('target')}" if solver else "none"
    base, adapted = _row(rows, "base"), _row(rows, "plain CPT")
    sel, uni = _row(rows, "selected"), _row(rows, "uniform baseline")
    findings = [cpt_finding(base, adapted)] if base and adapted else []
    findings.append(selected_finding(sel, target))
    if solver.get("message"):
        findings.append(f"Solver: {solver['message']}")
    if (u := uniform_finding(sel, uni)) is not None:
        findings.append(u)
    verdict = sweep.get("verdict") or {}
    if verdict.get("summary"):
        findings.append(
            f"Sweep verdict (layer-aware families vs the uniform line): {verdict['summary']}"
        )
    a_lines, table = analyzer_findings(analysis)
    findings += a_lines
    findings += [f"Note: {n}" for n in sweep.get("notes", [])]
    costs = [
        {"stage": m["stage"], "seconds": m["seconds"], "cached": m.get("cached", False)}
        for m in markers
    ]
    summary = [
        f"Model: {cfg.model.name}; domain corpus: {cfg.data.domain}; "
        f"CPT: {cfg.trainer.max_steps} steps at lr {cfg.trainer.lr}, seed {cfg.seed}.",
        f"Probes: bits per byte on held-out general and finance text "
        f"({compare.get('probe', {}).get('max_tokens', '?')} tokens each).",
        f"Wall time of this invocation: {fresh_seconds:.0f} s "
        f"(stages first computed in {sum(c['seconds'] for c in costs):.0f} s).",
    ]
    plots = [
        ("Trade-off: general vs domain (sweep)", "sweep/frontier.png"),
        ("Layer impact (analyzer)", "analyze/layer_impact.png"),
    ]
    return Report(
        title=cfg.title,
        summary=summary,
        rows=rows,
        findings=findings,
        ranking_table=table,
        stage_costs=costs,
        plots=plots,
        versions=versions(),
        config_yaml=OmegaConf.to_yaml(cfg, resolve=True),
    )
