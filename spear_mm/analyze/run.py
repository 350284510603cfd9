"""`spear-mm analyze`: weight signals → combined score → (ablation, validation) → outputs.

Reads top to bottom: ``weight_analysis`` (streaming, cheap) → ``ablation_analysis`` (optional,
expensive ground truth) → ``validation`` (ρ of every signal and of the combined score beside the
depth baseline; selection quality at each k) → ``report.write_outputs``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from spear_mm.analyze import aggregate
from spear_mm.analyze.ablation import Ablation, LayerRestorer, selection_quality
from spear_mm.analyze.config import DOMAIN_PROBE, GENERAL_PROBE, AnalyzeConfig, general_probe
from spear_mm.analyze.document import read_analysis
from spear_mm.analyze.sanity import sanity_report
from spear_mm.analyze.stream import resolve_device, stream_signals
from spear_mm.analyze.validate import (
    ScoreSpec,
    combined_score,
    default_spec,
    fit_spec,
    partial_spearman,
    ranking,
    signal_correlations,
    spearman,
)
from spear_mm.errors import UserError
from spear_mm.io.checkpoint import CheckpointReader


def _log(msg: str) -> None:
    print(f"[analyze] {msg}", file=sys.stderr, flush=True)


def weight_analysis(base: CheckpointReader, adapted: CheckpointReader, cfg: AnalyzeConfig) -> dict:
    """Per-tensor records, per-layer features and the kinds table, from one streaming pass."""
    records, summary = stream_signals(
        base, adapted, top_k=cfg.top_k, svd_mode=cfg.svd_mode, device=cfg.device
    )
    aggregate.add_swci(records)
    n = summary["num_layers"]
    kinds, table = aggregate.kind_table(records, n, "rel_drift")
    return {
        "summary": summary,
        "records": records,
        "features": aggregate.layer_features(records, n),
        "kinds": kinds,
        "kind_table": table,
    }


def _measure_fn(cfg, tokenizer, trace: list | None = None):
    """Scores {probe: bpb} of a live model; with `trace`, each call's per-document NLL is
    appended to it (the ablation's documents, resampled for the ρ interval)."""
    from spear_mm.eval.probe import Probe

    probes = [
        Probe.named(
            name,
            role="calibration",  # the ablation is what the score spec is fitted / checked on
            heldout=cfg.probe.heldout,
            max_tokens=cfg.probe.max_tokens,
            seq_len=cfg.probe.seq_len,
            batch_size=cfg.probe.batch_size,
            autocast_bf16=cfg.probe.autocast_bf16,
            doc_max_tokens=cfg.probe.doc_max_tokens,
        )
        for name in cfg.probe.names
    ]

    def measure(model) -> dict[str, float]:
        results = {p.name: p.score(model, tokenizer) for p in probes}
        if trace is not None:
            trace.append({n: list(r.docs.nll) for n, r in results.items()})
            trace_meta.update({p.name: p.documents(tokenizer) for p in probes})
        return {n: r.bpb for n, r in results.items()}

    trace_meta: dict = {}
    measure.meta = trace_meta
    return measure


def load_prior(path: str, n_layers: int) -> list[float]:
    """Per-layer general harm measured by the ablation of another study (its analysis.json).

    Not a weight signal: a profile measured once (e.g. on a pilot CPT run of the same base) and
    reused. The two studies must have the same layer count."""
    try:
        values = read_analysis(path).harm(GENERAL_PROBE)
    except UserError as exc:  # the reader's message starts with the file: name the key too
        raise UserError(f"analyze prior={exc}") from None
    if values is None:
        raise UserError(
            f"analyze prior={path}: an analysis.json without a '{GENERAL_PROBE}' ablation; run "
            "that study with ablation=true 'probe.names=[general,finance]'"
        )
    if len(values) != n_layers:
        raise UserError(
            f"analyze prior={path}: {len(values)} layers there, {n_layers} in this model; the "
            "prior must come from the same base architecture"
        )
    return values


def ablation_analysis(base, adapted, weights: dict, score: list[float], cfg) -> dict:
    """Per-layer restore ablation, then the joint restores of each method's top-k layers.

    The truth ranking is the general probe's harm (``general_probe``: checked with the config)."""
    from spear_mm.io.sources import load_model

    n = weights["summary"]["num_layers"]
    model, tok = load_model(adapted.folder, dtype=cfg.dtype)
    model.to(resolve_device(cfg.device))
    trace: list = []
    measure = _measure_fn(cfg, tok, trace)
    abl = Ablation(
        model,
        LayerRestorer(model, base, adapted),
        measure,
        n,
        use_cache=cfg.ablation_cache,
        log=_log,
    )
    result = abl.run()
    # Per-document NLL of adapted, base and every single-layer restore (calls in that order).
    result["per_doc"] = {
        "adapted": trace[0], "base": trace[1], "per_layer": trace[2 : 2 + n],
        "probes": measure.meta,
    }  # fmt: skip
    truth = ranking(result["harm"][general_probe(cfg.probe.names)])
    depth = list(range(n))
    picks = {"score": ranking(score), "ablation": truth, "depth": depth}
    if "prior" in weights["features"][0]:
        picks["prior"] = ranking([f["prior"] for f in weights["features"]])
    selections = {
        f"{m}@{k}": order[:k] for k in cfg.select_k if k <= n for m, order in picks.items()
    }
    abl.run_selections(selections)
    # The probe size sets the ablation's noise (docs/benchmarks.md): the report warns when small.
    result["probe"] = {
        "names": list(cfg.probe.names),
        "max_tokens": cfg.probe.max_tokens,
        "seq_len": cfg.probe.seq_len,
    }
    if cfg.lm_eval_tasks:
        result["lm_eval"] = _lm_eval(model, tok, abl, cfg)
    return result


def _lm_eval(model, tok, abl: Ablation, cfg) -> dict:
    """lm-eval tasks on adapted and every single-layer restore (slow; only when asked)."""
    from spear_mm.eval import harness

    def run() -> dict:
        return harness.evaluate(
            model,
            list(cfg.lm_eval_tasks),
            tokenizer=tok,
            limit=cfg.lm_eval_limit,
            seed=cfg.seed,
            progress=False,
        )

    out = {"adapted": run(), "per_layer": []}
    for i in range(abl.n_layers):
        with abl.restorer.restored([i]):
            out["per_layer"].append(run())
        _log(f"lm-eval layer {i}/{abl.n_layers} done")
    return out


def validation(features: list[dict], score: list[float], abl: dict, cfg) -> dict:
    """ρ of every feature and of the combined score vs general harm, and selection quality."""
    gen = general_probe(cfg.probe.names)
    harm = abl["harm"][gen]
    corr = signal_correlations(features, harm)
    out = {
        "target": "general_harm",
        "rho_combined": spearman(score, harm),
        "rho_depth": corr.get("depth", 0.0),
        **({"rho_prior": corr["prior"]} if "prior" in corr else {}),
        "rho_signals": corr,
        "rho_signals_given_depth": signal_correlations(features, harm, control="depth"),
        "rho_combined_given_depth": partial_spearman(score, harm, [f["depth"] for f in features]),
    }
    if DOMAIN_PROBE in abl["harm"]:
        out["rho_combined_vs_domain_harm"] = spearman(score, abl["harm"][DOMAIN_PROBE])
        out["selection"] = {
            str(k): selection_quality(abl, k, gen, DOMAIN_PROBE) for k in cfg.select_k
        }
    return out


def analyze(cfg: AnalyzeConfig) -> dict:
    """Run the whole analysis for a config; write the outputs; return analysis.json's dict."""
    from spear_mm.analyze import report
    from spear_mm.io.sources import resolve_model

    if cfg.threads:
        import torch

        torch.set_num_threads(int(cfg.threads))
    base_dir, adapted_dir = resolve_model(cfg.base), resolve_model(cfg.adapted)
    spec = ScoreSpec.load(cfg.score_spec) if cfg.score_spec else None
    with CheckpointReader(base_dir) as base, CheckpointReader(adapted_dir) as adapted:
        t0 = time.perf_counter()
        weights = weight_analysis(base, adapted, cfg)
        if cfg.prior:
            prior = load_prior(cfg.prior, weights["summary"]["num_layers"])
            for f, v in zip(weights["features"], prior):
                f["prior"] = v
        if spec is None:
            spec = default_spec(weights["features"])
        score = combined_score(weights["features"], spec)
        weights["seconds"] = time.perf_counter() - t0
        _log(
            f"weight signals: {weights['summary']['num_tensors']} tensors in "
            f"{weights['seconds']:.1f} s"
        )
        abl = ablation_analysis(base, adapted, weights, score, cfg) if cfg.ablation else None
    val = validation(weights["features"], score, abl, cfg) if abl else None
    harm = abl["harm"][general_probe(cfg.probe.names)] if abl else None
    fitted = None
    if abl and cfg.fit:
        fitted = fit_spec(weights["features"], harm, label=str(adapted_dir))
        fitted.notes.append("in-sample: fitted on this study's ablation; check it on another")
    sanity = sanity_report(weights["features"], score, harm)
    for line in sanity["warnings"]:
        _log(f"warning: {line}")
    return report.write_outputs(
        Path(cfg.out), cfg, base_dir, adapted_dir, weights, spec, score, abl, val, fitted, sanity
    )
