"""Bootstrap replicates of the sweep: every point's scores recomputed on resampled documents.

Every point was scored on the same selection-role documents, so one draw of the general
documents and one of the finance documents (spear_mm.eval.stats) give every point's bits-per-byte
in that replicate; retention, gain kept and forgetting recovered follow with the replicate's own
base and adapted scores. The verdict (spear_mm.sweep.frontier.compare_families) reads the
replicates to put a paired interval on each family's advantage over the uniform line, and the
denominators' intervals say whether a ratio is measurable at this probe size at all.
"""

from __future__ import annotations

import numpy as np

from spear_mm.eval import stats


def bpb_draws(points, doc_meta: dict, probe: str, resamples: int, seed: int):
    """(point bpb (P,), replicate bpb (B, P)) of `probe` for every point, paired."""
    nll = np.array([p.docs[probe] for p in points], dtype=np.float64)
    nbytes = np.asarray(doc_meta[probe]["bytes"], dtype=np.float64)
    counts = stats.draw_counts(nll.shape[1], resamples, stats.rng_for(seed, probe))
    return stats.bpb_of(nll, nbytes), stats.bpb_of(nll, nbytes, counts)


def derived(g: np.ndarray, f: np.ndarray, ia: int, ib: int) -> dict[str, np.ndarray]:
    """retention / gain_kept / recovered of every point from bpb arrays (..., P) (lower = better);
    also the two denominators: forgetting (adapted − base general) and gain (base − adapted
    finance)."""
    ga, gb = g[..., ia : ia + 1], g[..., ib : ib + 1]
    fa, fb = f[..., ia : ia + 1], f[..., ib : ib + 1]
    with np.errstate(divide="ignore", invalid="ignore"):
        return {
            "retention": gb / g,
            "gain_kept": (f - fb) / (fa - fb),
            "recovered": (ga - g) / (ga - gb),
            "forgetting": (ga - gb)[..., 0],
            "gain": (fb - fa)[..., 0],
        }


def replicates(sw, resamples: int, seed: int) -> dict:
    """Point and replicate scores of every sweep point (arrays indexed like `sw.points`)."""
    meta = sw.session.scorer.doc_meta
    g, g_draws = bpb_draws(sw.points, meta, "general", resamples, seed)
    f, f_draws = bpb_draws(sw.points, meta, "finance", resamples, seed)
    fams = [p.family for p in sw.points]
    ia, ib = fams.index("adapted"), fams.index("base")
    n = {probe: len(meta[probe]["bytes"]) for probe in ("general", "finance")}
    return {"point": derived(g, f, ia, ib), "draws": derived(g_draws, f_draws, ia, ib), "n": n}


def noise_floor(rep: dict, seed: int) -> dict:
    """Intervals of the two denominators: is there forgetting / domain gain to measure at all?
    (Both are oriented so that > 0 is the expected direction; fewer than MIN_ITEMS documents
    give no interval and nothing measurable.)"""
    out = {}
    for key, probe in (("forgetting", "general"), ("gain", "finance")):
        n = rep["n"][probe]
        iv = stats.percentile(float(rep["point"][key]), rep["draws"][key], seed=seed, n=n)
        out[key] = {**iv.record(), "measurable": bool(iv.lo > 0)}  # both should be > 0
    return out


def verdict_replicates(sw, rep: dict, y: str, families: dict) -> list[tuple[list, dict]]:
    """(uniform line, families) per replicate, in the shape `compare_families` takes."""
    uniform = [i for i, p in enumerate(sw.points) if p.family in ("uniform", "adapted", "base")]
    index = {f: [i for i, p in enumerate(sw.points) if p.family == f] for f in families}
    ys, gains = rep["draws"][y], rep["draws"]["gain_kept"]
    out = []
    for b in range(ys.shape[0]):
        line = [(ys[b, i], gains[b, i]) for i in uniform]
        fams = {
            f: [(sw.points[i].knob, ys[b, i], gains[b, i]) for i in idx] for f, idx in index.items()
        }
        out.append((line, fams))
    return out
