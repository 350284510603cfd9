"""Intervals for a table of models scored on the same documents (what `compare` states).

Input: per model, the per-document NLL of each probe (same documents, same order for every
model; bytes per document shared) and, for multiple choice, per-question correctness. Output:
for every model, the paired 95% bootstrap interval (spear_mm.eval.stats) of its bits-per-byte,
general retention, domain gain kept and forgetting recovered against the table's base and
adapted rows, and of its MC accuracy; and the paired interval of its difference from a reference
row (e.g. the uniform baseline). Gain kept and forgetting recovered are ratios: when the interval
of their denominator (the adapted model's gain or forgetting) contains 0, they are "not
measurable at this probe size" and the raw difference's interval is given instead.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from spear_mm.eval import stats


def probe_draws(nll: Sequence[Sequence[float]], nbytes, probe: str, resamples: int, seed: int):
    """(bpb of each model (M,), bpb on each paired replicate (B, M)): the draw is fixed by
    `seed` and the probe's name, so every table over the same documents pairs with this one."""
    nll = np.asarray(nll, dtype=np.float64)
    counts = stats.draw_counts(nll.shape[1], resamples, stats.rng_for(seed, probe))
    return stats.bpb_of(nll, nbytes), stats.bpb_of(nll, nbytes, counts)


def bpb_table(
    general: tuple[Sequence, Sequence],
    finance: tuple[Sequence, Sequence],
    *,
    base: int = 0,
    adapted: int = 1,
    resamples: int = stats.RESAMPLES,
    seed: int = 0,
) -> list[dict]:
    """Per model: intervals of general/finance bpb, retention, gain kept, forgetting recovered.

    `general` / `finance` are (nll rows (M, D), bytes (D,)). Ratio entries are `stats.ratio`
    records ({measurable, interval | reason, denominator}).
    """
    g, gd = probe_draws(*general, "general", resamples, seed)
    f, fd = probe_draws(*finance, "finance", resamples, seed)
    n_g, n_f = len(general[1]), len(finance[1])
    out = []
    for m in range(len(g)):
        iv = {"seed": seed}
        out.append(
            {
                "general_bpb": stats.percentile(g[m], gd[:, m], n=n_g, **iv).record(),
                "finance_bpb": stats.percentile(f[m], fd[:, m], n=n_f, **iv).record(),
                "general_retention": stats.percentile(
                    g[base] / g[m], gd[:, base] / gd[:, m], n=n_g, **iv
                ).record(),
                "gain_kept": stats.ratio(  # a gain is a fall in bpb: the denominator is < 0
                    f[m] - f[base],
                    fd[:, m] - fd[:, base],
                    f[adapted] - f[base],
                    fd[:, adapted] - fd[:, base],
                    sign=-1.0,
                    n=n_f,
                    **iv,
                ),
                "forgetting_recovered": stats.ratio(
                    g[adapted] - g[m],
                    gd[:, adapted] - gd[:, m],
                    g[adapted] - g[base],
                    gd[:, adapted] - gd[:, base],
                    n=n_g,
                    **iv,
                ),
            }
        )
    return out


def bpb_differences(
    general: tuple[Sequence, Sequence],
    finance: tuple[Sequence, Sequence],
    reference: int,
    *,
    resamples: int = stats.RESAMPLES,
    seed: int = 0,
) -> list[dict]:
    """Per model: paired intervals of (model − reference) general and finance bpb, and the call.

    Lower bpb is better, so a difference whose interval lies below 0 is a measured improvement.
    The call: "better" (one axis better, the other not measurably worse), "worse" (the mirror),
    "trade-off" (better on one, worse on the other), else "no evidence either way".
    """
    g, gd = probe_draws(*general, "general", resamples, seed)
    f, fd = probe_draws(*finance, "finance", resamples, seed)
    out = []
    n_g, n_f = len(general[1]), len(finance[1])
    for m in range(len(g)):
        dg = stats.percentile(g[m] - g[reference], gd[:, m] - gd[:, reference], seed=seed, n=n_g)
        df = stats.percentile(f[m] - f[reference], fd[:, m] - fd[:, reference], seed=seed, n=n_f)
        out.append({"general_bpb": dg.record(), "finance_bpb": df.record(), "call": call(dg, df)})
    return out


def call(*diffs: stats.Interval) -> str:
    """Verdict from differences in lower-is-better scores (see `bpb_differences`)."""
    better = any(d.hi < 0 for d in diffs)
    worse = any(d.lo > 0 for d in diffs)
    if better and worse:
        return "trade-off"
    if better:
        return "better"
    if worse:
        return "worse"
    return "no evidence either way"


def accuracy_table(
    per_question: Sequence[Sequence[list] | None],
    *,
    stream: str,
    kind: str = "gain_kept",
    base: int = 0,
    adapted: int = 1,
    resamples: int = stats.RESAMPLES,
    seed: int = 0,
) -> list[dict | None]:
    """Per model: accuracy interval over the questions every model answered (paired draws),
    and `kind` — "gain_kept" (domain tasks) or "recovered" (general tasks) — on accuracy, the
    paper's kind of metric, as a `stats.ratio` record."""
    have = [p for p in per_question if p]
    if not have:
        return [None] * len(per_question)
    common = [q for q, _ in have[0] if all(q in dict(p) for p in have)]
    if not common or not per_question[base] or not per_question[adapted]:
        return [None] * len(per_question)
    rows = [[dict(p)[q] for q in common] if p else [np.nan] * len(common) for p in per_question]
    values = np.asarray(rows, dtype=np.float64)
    counts = stats.draw_counts(len(common), resamples, stats.rng_for(seed, stream))
    a, ad = stats.mean_of(values), stats.mean_of(values, counts)
    kw = {"seed": seed, "n": len(common)}
    out: list[dict | None] = []
    for m, p in enumerate(per_question):
        if not p:
            out.append(None)
            continue
        if kind == "recovered":  # (model − adapted) / (base − adapted): higher accuracy is better
            num, nd = a[m] - a[adapted], ad[:, m] - ad[:, adapted]
            den, dd = a[base] - a[adapted], ad[:, base] - ad[:, adapted]
        else:  # gain kept: (model − base) / (adapted − base)
            num, nd = a[m] - a[base], ad[:, m] - ad[:, base]
            den, dd = a[adapted] - a[base], ad[:, adapted] - ad[:, base]
        out.append(
            {
                "accuracy": stats.percentile(a[m], ad[:, m], **kw).record(),
                kind: stats.ratio(num, nd, den, dd, **kw),
            }
        )
    return out
