"""Pure weight-only change signals for one tensor pair (base W, adapted W').

Every function here takes tensors and returns plain floats; no I/O, no names. All maths runs in
float32 (SVDs included) on whatever device the inputs live on. Formulas and the reasoning behind
them are in docs/analyzer.md; in short:

- ``rel_drift``   ‖W' − W‖_F / ‖W‖_F                     (0 for identical tensors)
- ``cosine``      ⟨W, W'⟩ / (‖W‖ ‖W'‖)                    (1 for identical or both-zero tensors)
- ``snr``         Spectrum's SNR: Σ S>edge / Σ S≤edge / S[0], σ = IQR(S)/1.349,
                  edge = σ(1+√β), β = min(n, m)/max(n, m)
- ``svdr``        singular-value drop ratio over the base's signal spectrum
- ``top_drift``   change along the base's top-k singular directions, ‖U_kᵀ ΔW V_k‖ / ‖S_k‖
- ``out_drift``   activation-free output-change proxy ‖ΔW Wᵀ‖_F / ‖W Wᵀ‖_F (inputs drawn from
                  the base's row space, weighted by its singular values)

Zero denominators never raise: a zero base with a zero change is "no change" (0), a zero base with
a non-zero change is measured against ``EPS`` (a large but finite number).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

# Floor for denominators: keeps every signal finite (JSON has no inf) without changing any ratio
# whose denominator is a real weight norm (those are >> 1e-12).
EPS = 1e-12
# 1.349 = IQR of a standard normal: turns an interquartile range into a σ estimate (Spectrum).
IQR_TO_SIGMA = 1.349


def _f32(x: torch.Tensor) -> torch.Tensor:
    return x.detach().to(torch.float32)


def safe_ratio(num: float, den: float) -> float:
    """``num / den`` with 0/0 → 0 and x/0 → x/EPS; never raises, never returns inf/nan."""
    if num == 0.0:
        return 0.0
    return num / max(den, EPS)


def rel_drift(base: torch.Tensor, adapted: torch.Tensor) -> float:
    """Relative Frobenius drift ‖W' − W‖ / ‖W‖; 0 for identical tensors (whatever their norm)."""
    b, a = _f32(base), _f32(adapted)
    return safe_ratio(float(torch.linalg.vector_norm(a - b)), float(torch.linalg.vector_norm(b)))


def cosine(base: torch.Tensor, adapted: torch.Tensor) -> float:
    """Cosine of the flattened tensors; 1 when identical (also both zero), 0 when one is zero."""
    b, a = _f32(base).flatten(), _f32(adapted).flatten()
    nb, na = float(torch.linalg.vector_norm(b)), float(torch.linalg.vector_norm(a))
    if nb == 0.0 and na == 0.0:
        return 1.0
    if nb == 0.0 or na == 0.0:
        return 0.0
    # Clamp: rounding can push a self-cosine a hair above 1.
    return max(-1.0, min(1.0, float(torch.dot(b, a)) / (nb * na)))


def mp_edge(sigma: float, n: int, m: int) -> float:
    """Marchenko–Pastur bulk edge in singular-value units, σ(1 + √β) with β = min/max dims."""
    beta = min(n, m) / max(n, m)
    return sigma * (1.0 + math.sqrt(beta))


@dataclass(frozen=True)
class SpectrumStats:
    """Spectrum-style statistics of one singular-value vector (descending)."""

    snr: float  # Σ S above edge / Σ S at or below edge / S[0]
    edge: float  # MP bulk edge σ(1+√β)
    n_signal: int  # number of singular values strictly above the edge


def spectrum_snr(s: torch.Tensor, n: int, m: int) -> SpectrumStats:
    """Spectrum's SNR from descending singular values ``s`` of an ``n × m`` matrix.

    Follows the Spectrum reference implementation (arXiv 2406.06623): σ = IQR(S)/1.349 with
    ``torch.quantile``'s linear interpolation, edge = σ(1+√β), SNR = Σ S>edge / Σ S≤edge, then
    divided by S[0]. Edge cases (ours): an all-zero spectrum has SNR 0; when no value lies at or
    below the edge (possible for tiny matrices) the smallest singular value stands in for the noise
    sum instead of the reference's constant 1.0, which would make the SNR depend on weight units.
    """
    s = _f32(s).flatten()
    if s.numel() == 0 or float(s[0]) <= 0.0:
        return SpectrumStats(0.0, 0.0, 0)
    sigma = float(torch.quantile(s, 0.75) - torch.quantile(s, 0.25)) / IQR_TO_SIGMA
    edge = mp_edge(sigma, n, m)
    above = s > edge
    signal = float(s[above].sum())
    noise = float(s[~above].sum()) if bool((~above).any()) else float(s[-1])
    return SpectrumStats(safe_ratio(signal, noise) / float(s[0]), edge, int(above.sum()))


def svdr(s_base: torch.Tensor, s_adapted: torch.Tensor, k: int) -> float:
    """Singular-value drop ratio over the first ``k`` (signal) singular values.

    Σ_{i<k} max(0, S_b[i] − S_a[i]) / Σ_{i<k} S_b[i]: the fraction of the base's signal spectrum
    that the adapted matrix lost. Growth does not count (CPT that only adds capacity loses nothing);
    0 for identical spectra, 0 when ``k`` is 0 or the base spectrum is zero.
    """
    k = min(int(k), s_base.numel(), s_adapted.numel())
    if k <= 0:
        return 0.0
    sb, sa = _f32(s_base)[:k], _f32(s_adapted)[:k]
    return safe_ratio(float(torch.clamp(sb - sa, min=0).sum()), float(sb.sum()))


def top_drift(
    delta: torch.Tensor, u: torch.Tensor, s: torch.Tensor, v: torch.Tensor, k: int
) -> float:
    """Change along the base's top-``k`` singular directions: ‖U_kᵀ ΔW V_k‖_F / ‖S_k‖.

    ``u`` (n×r), ``s`` (r), ``v`` (m×r) are the base's (possibly truncated) SVD factors. Measures
    how much the change moves the part of W that carries its signal, relative to that signal.
    """
    k = min(int(k), s.numel())
    if k <= 0:
        return 0.0
    core = u[:, :k].T @ _f32(delta) @ v[:, :k]
    return safe_ratio(float(torch.linalg.vector_norm(core)), float(torch.linalg.vector_norm(s[:k])))


def out_drift(base: torch.Tensor, adapted: torch.Tensor) -> float:
    """Activation-free output-change proxy ‖ΔW Wᵀ‖_F / ‖W Wᵀ‖_F for ``W`` of shape (out, in).

    With inputs x = W ᵀ g (g white noise: inputs that the base reads strongly, i.e. its row space
    weighted by the singular values), E‖ΔW x‖² / E‖W x‖² = ‖ΔW Wᵀ‖² / ‖W Wᵀ‖². Computed on the
    cheaper side: (out × out) products directly, or via (in × in) Gram matrices for tall matrices
    such as embeddings, using ‖ΔW Wᵀ‖² = ⟨ΔWᵀΔW, WᵀW⟩ and ‖W Wᵀ‖ = ‖WᵀW‖. No SVD needed.
    """
    w = _f32(base)
    d = _f32(adapted) - w
    if d.shape[0] <= d.shape[1]:
        num = float(torch.linalg.vector_norm(d @ w.T))
        den = float(torch.linalg.vector_norm(w @ w.T))
    else:
        gram_w = w.T @ w
        num = math.sqrt(max(float((d.T @ d * gram_w).sum()), 0.0))
        den = float(torch.linalg.vector_norm(gram_w))
    return safe_ratio(num, den)


def vector_signals(base: torch.Tensor, adapted: torch.Tensor) -> dict[str, float]:
    """Signals for 1-D tensors (norm gains, biases): no SVD, no SNR.

    ``rel_drift`` and ``cosine`` as for matrices, plus ``mean_abs_log_gain``: the mean of
    |log(|g'| / |g|)| over entries where both are non-zero — the average multiplicative change of a
    norm's gains, which is what an RMSNorm weight change does to the scale of its outputs.
    """
    b, a = _f32(base).flatten(), _f32(adapted).flatten()
    ok = (b != 0) & (a != 0)
    log_gain = float((a[ok].abs() / b[ok].abs()).log().abs().mean()) if bool(ok.any()) else 0.0
    return {
        "rel_drift": rel_drift(b, a),
        "cosine": cosine(b, a),
        "mean_abs_log_gain": log_gain,
    }


SVD_MODES = ("exact", "fast")


def _gram_spectrum(w: torch.Tensor) -> torch.Tensor:
    """Descending singular values of ``w`` from the smaller Gram matrix's eigenvalues."""
    gram = w.T @ w if w.shape[0] >= w.shape[1] else w @ w.T
    # Gram eigenvalues are S²; clamp tiny negative rounding before the square root.
    return torch.linalg.eigvalsh(gram).flip(0).clamp(min=0).sqrt()


def _gram_factors(w: torch.Tensor):
    """(U, S, V) of ``w`` from ``eigh`` of the smaller Gram matrix (descending S).

    The eigenvectors give one side exactly; the other side is W V / S (or Wᵀ U / S), with S
    floored at EPS so a zero matrix gives zero vectors instead of NaN. Much cheaper than an SVD;
    fine for the top directions, whose S is far above fp32 rounding of S².
    """
    tall = w.shape[0] >= w.shape[1]
    evals, evecs = torch.linalg.eigh(w.T @ w if tall else w @ w.T)
    s = evals.flip(0).clamp(min=0).sqrt()
    vecs = evecs.flip(1)
    if tall:
        return (w @ vecs) / s.clamp(min=EPS), s, vecs
    return vecs, s, (w.T @ vecs) / s.clamp(min=EPS)


def matrix_signals(
    base: torch.Tensor,
    adapted: torch.Tensor,
    *,
    top_k: int = 16,
    mode: str = "exact",
) -> dict[str, float]:
    """All signals for a 2-D tensor pair (shape (out, in)).

    ``top_k`` caps the number of base singular directions used by ``top_drift`` (it uses the
    base's MP signal count, at most ``top_k``, at least 1). ``mode`` "exact": one fp32 SVD of the
    base (spectrum + directions) and the adapted spectrum by ``svdvals``; "fast": both spectra from
    Gram-matrix eigen-decompositions (``eigh``/``eigvalsh``) and the base's top directions from
    the same ``eigh``, ~10x cheaper (errors measured in docs/benchmarks.md). ``base_sq`` /
    ``delta_sq`` are squared Frobenius norms, kept so layers can be aggregated norm-weighted.
    """
    if mode not in SVD_MODES:
        raise ValueError(f"svd mode {mode!r} not in {SVD_MODES}")
    w, wa = _f32(base), _f32(adapted)
    n, m = w.shape
    d = wa - w
    changed = float(torch.linalg.vector_norm(d)) > 0.0
    if mode == "exact":
        u, s_b, vh = torch.linalg.svd(w, full_matrices=False)
        v = vh.T
        s_a = torch.linalg.svdvals(wa) if changed else s_b
    else:
        u, s_b, v = _gram_factors(w)
        s_a = _gram_spectrum(wa) if changed else s_b
    st_b, st_a = spectrum_snr(s_b, n, m), spectrum_snr(s_a, n, m)
    k_sig = max(1, st_b.n_signal)
    k_top = max(1, min(top_k, k_sig, min(n, m)))
    # identical tensors: no change along any direction
    top = top_drift(d, u, s_b, v, k_top) if changed else 0.0
    return {
        "rel_drift": rel_drift(w, wa),
        "cosine": cosine(w, wa),
        "snr_base": st_b.snr,
        "snr_adapted": st_a.snr,
        "n_signal": float(st_b.n_signal),
        "svdr": svdr(s_b, s_a, k_sig),
        "top_drift": top,
        "out_drift": out_drift(w, wa),
        "base_sq": float(torch.linalg.vector_norm(w)) ** 2,
        "delta_sq": float(torch.linalg.vector_norm(d)) ** 2,
    }


def tensor_signals(base: torch.Tensor, adapted: torch.Tensor, **kw) -> dict[str, float]:
    """Dispatch on rank: ``matrix_signals`` for 2-D, ``vector_signals`` (+ norms) otherwise.

    Keyword options (``top_k``, ``mode``) only apply to matrices; 1-D tensors and
    degenerate matrices (one row or column) get the SVD-free vector treatment.
    """
    if base.shape != adapted.shape:
        raise ValueError(f"shape mismatch {tuple(base.shape)} vs {tuple(adapted.shape)}")
    if base.ndim == 2 and min(base.shape) > 1:
        return matrix_signals(base, adapted, **kw)
    out = vector_signals(base, adapted)
    b = _f32(base)
    out["base_sq"] = float(torch.linalg.vector_norm(b)) ** 2
    out["delta_sq"] = float(torch.linalg.vector_norm(_f32(adapted) - b)) ** 2
    return out
