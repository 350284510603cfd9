"""Pure task-vector kernels: trim, drop, low-rank truncate and sign-elect Δ = adapted − base.

The task-vector merge of one adapted model with its base is

    merged = base + λ · combine(w · S(Δ))

where S sparsifies or truncates Δ (`magnitude_mask`, `breadcrumbs_mask`, `dare_mask`,
`lowrank`), w is the model's weight, `combine` is TIES sign election (`elect_signs`) with an
optional division by the weights of the entries kept, and λ a global scale. `task_vector_merge`
evaluates it with mergekit 0.1.5's operation order (documented in docs/merge.md), in the dtype of
its inputs, so a mergekit recipe gives mergekit's tensors.

Facts that hold with ONE adapted model (the spear-mm case): sign election keeps every nonzero
entry (each entry's sign is its own majority), and normalising by the kept weights cancels w, so
`ties` is magnitude trimming and `dare_ties` is `dare_linear` up to that division.

Trimming keeps the entries whose rank in |Δ| (fp32) falls in a window, found in linear time with
`torch.kthvalue`; equal magnitudes at a cut are taken lower index first. mergekit recipes ask for
mergekit's own order (`sort_ties`): when a run of equal magnitudes straddles a cut (frequent with
bf16 checkpoints) the ranks come from `torch.sort`, the primitive mergekit uses, so the kept set
is mergekit's. Scratch: the fp32 magnitudes and masks, plus 8 bytes per element of sort indices
on that path. DARE draws its mask from a `torch.Generator`
seeded per tensor (`tensor_seed`), block by block, so it is reproducible for any thread count.
"""

from __future__ import annotations

import math
import zlib

import torch

# Entries per block when drawing DARE masks and per row when summing L1 norms.
BLOCK = 1 << 19
ROW = 1024
EPS = 1e-7  # mergekit's threshold below which a norm counts as zero (no rescaling)


def _smallest(mag: torch.Tensor, r: int) -> torch.Tensor:
    """Mask of the r smallest entries of a 1-D tensor, equal values taken lower index first
    (the first r of a stable ascending sort), in linear time."""
    if r <= 0:
        return torch.zeros_like(mag, dtype=torch.bool)
    cut = torch.kthvalue(mag, r).values
    chosen = mag < cut
    need = r - int(chosen.sum())
    chosen[torch.nonzero(mag == cut).squeeze(1)[:need]] = True
    return chosen


def _largest(mag: torch.Tensor, k: int) -> torch.Tensor:
    """Mask of the k largest entries, equal values taken lower index first (stable descending)."""
    cut = torch.kthvalue(mag, mag.numel() - k + 1).values
    chosen = mag > cut
    need = k - int(chosen.sum())
    chosen[torch.nonzero(mag == cut).squeeze(1)[:need]] = True
    return chosen


def _straddles(mag: torch.Tensor, chosen: torch.Tensor) -> bool:
    """True when some value occurs both inside and outside the chosen set (a tie at a cut)."""
    if bool(chosen.all()) or not bool(chosen.any()):
        return False
    inside, outside = mag[chosen], mag[~chosen]
    return bool(torch.isin(torch.stack([inside.min(), inside.max()]), outside).any())


def magnitude_mask(
    delta: torch.Tensor, density: float, sort_ties: bool = False
) -> torch.Tensor | None:
    """Keep the k = max(1, ⌊density·n⌋) entries of largest |Δ| (None: keep all).

    density ≥ 1 keeps everything; density ≤ 0 (or an empty tensor) keeps nothing; a positive
    density keeps at least one entry. Equal magnitudes at the cut are taken lower index first,
    or — with `sort_ties` (mergekit recipes) — in the order of mergekit's `torch.argsort`.
    Returns a mask in Δ's dtype (1 = kept).
    """
    if density >= 1:
        return None
    n = delta.numel()
    if density <= 0 or n == 0:
        return torch.zeros_like(delta)
    k = max(1, int(density * n))
    mag = delta.abs().reshape(-1).float()
    chosen = _largest(mag, k)
    if sort_ties and _straddles(mag, chosen):
        chosen = torch.zeros_like(chosen)
        chosen[torch.argsort(mag, descending=True)[:k]] = True
    return chosen.to(delta.dtype).view_as(delta)


def breadcrumbs_mask(
    delta: torch.Tensor, density: float, gamma: float, sort_ties: bool = False
) -> torch.Tensor | None:
    """Model Breadcrumbs: drop the ⌊gamma·n⌋ largest |Δ| and the smallest, keeping ⌊density·n⌋
    (the entries of ascending rank n_bottom .. n_bottom + keep − 1).

    The top cut shrinks when density + gamma > 1 so that density is honoured. None when
    density ≥ 1. Ties at a cut as in `magnitude_mask` (stable ascending order, or mergekit's
    `torch.sort` order with `sort_ties`).
    """
    if density >= 1:
        return None
    n = delta.numel()
    keep = int(density * n)
    n_bottom = max(0, n - keep - int(gamma * n))
    mag = delta.abs().reshape(-1).float()
    chosen = _smallest(mag, n_bottom + keep) & ~_smallest(mag, n_bottom)
    if sort_ties and _straddles(mag, chosen):
        chosen = torch.zeros_like(chosen)
        chosen[torch.sort(mag, descending=False).indices[n_bottom : n_bottom + keep]] = True
    return chosen.to(delta.dtype).view_as(delta)


def tensor_seed(seed: int, name: str) -> int:
    """The DARE seed of one tensor: the recipe's seed mixed with the tensor's name, so masks do
    not depend on the order in which tensors are merged."""
    return (int(seed) * 0x9E3779B1 + zlib.crc32(name.encode())) % (1 << 63)


def dare_mask(delta: torch.Tensor, density: float, seed: int) -> torch.Tensor | None:
    """DARE: keep each entry independently with probability `density` (None when ≥ 1).

    The probability is rounded to the work dtype first (bf16 for bf16 deltas, else fp32), as
    mergekit's `torch.bernoulli(full_like(Δ, density))` does, so the kept fraction has the same
    distribution. Uniforms are drawn in fp32 from one seeded generator, block by block.
    """
    if density >= 1:
        return None
    work = torch.bfloat16 if delta.dtype == torch.bfloat16 else torch.float32
    p = float(torch.tensor(density, dtype=work))
    gen = torch.Generator(device="cpu").manual_seed(seed)
    flat = torch.empty(delta.numel(), dtype=delta.dtype)
    for lo in range(0, flat.numel(), BLOCK):
        hi = min(flat.numel(), lo + BLOCK)
        flat[lo:hi] = torch.rand(hi - lo, generator=gen) < p
    return flat.view_as(delta).to(delta.device)


def l1_sum(x: torch.Tensor) -> float:
    """Σ|x| in fp64, independent of the thread count: one row of ROW entries per thread, then an
    exactly rounded sum of the row sums."""
    flat = x.reshape(-1)
    full = (flat.numel() // ROW) * ROW
    parts = []
    if full:
        parts.append(torch.linalg.vector_norm(flat[:full].view(-1, ROW), ord=1, dim=1))
    if full < flat.numel():
        parts.append(torch.linalg.vector_norm(flat[full:], ord=1).reshape(1))
    return math.fsum(torch.cat(parts).double().tolist()) if parts else 0.0


def apply_mask(delta: torch.Tensor, mask: torch.Tensor | None, rescale: bool) -> torch.Tensor:
    """Δ·mask, rescaled (when `rescale`) so that its L1 norm is Δ's — mergekit's `rescale`
    (the DARE paper divides by the density instead: the same in expectation)."""
    if mask is None:
        return delta
    masked = delta * mask
    if not rescale:
        return masked
    before, after = l1_sum(delta), l1_sum(masked)
    if before < EPS or after < EPS:
        return masked
    return masked * torch.tensor(before / after, dtype=delta.dtype, device=delta.device)


def lowrank(delta: torch.Tensor, rank: int) -> torch.Tensor:
    """Δ projected on its top-`rank` singular subspace (the best rank-r approximation).

    Computed in fp64 through the Gram matrix of the smaller side (eigh of ΔᵀΔ or ΔΔᵀ, then
    Δ·V·Vᵀ or U·Uᵀ·Δ): min(m, n)² memory instead of a full SVD. Tensors that are not matrices
    (norm weights, biases) and rank ≥ min(m, n) return Δ unchanged; rank ≤ 0 returns zeros.
    """
    if delta.dim() != 2 or rank >= min(delta.shape):
        return delta
    if rank <= 0:
        return torch.zeros_like(delta)
    d = delta.double()
    wide = d.shape[0] < d.shape[1]
    gram = d @ d.T if wide else d.T @ d
    _, vecs = torch.linalg.eigh(gram)  # ascending eigenvalues
    basis = vecs[:, -rank:]
    out = basis @ (basis.T @ d) if wide else (d @ basis) @ basis.T
    return out.to(delta.dtype)


def elect_signs(deltas: torch.Tensor) -> torch.Tensor:
    """TIES sign election over stacked task vectors (dim 0): the elected sign of each entry is
    the sign of the entries' sum (0 counts as +); an entry is kept when its sign equals it.
    With one task vector this keeps exactly the nonzero entries."""
    elected = torch.where(deltas.sum(dim=0) >= 0, 1, -1).to(deltas.dtype)
    return deltas.sign() == elected


def task_vector_merge(
    base: torch.Tensor,
    adapted: torch.Tensor,
    *,
    sparse: torch.Tensor | None = None,
    weight: float = 1.0,
    lam: float = 1.0,
    consensus: bool = False,
    normalize: bool = False,
    delta: torch.Tensor | None = None,
) -> torch.Tensor:
    """base + λ·combine(w·Δ′) in the inputs' dtype, with mergekit 0.1.5's operation order.

    `delta`: the (already sparsified / truncated) Δ′ (default adapted − base). `consensus`:
    TIES sign election, and the divisor is the weight of the entries kept (0 → 1); otherwise the
    divisor is w (|w| < 1e-8 → 1). `normalize` divides by the divisor. λ = 1 skips the product.
    """
    d = adapted - base if delta is None else delta
    w = torch.tensor(weight, dtype=d.dtype, device=d.device)
    unit = float(w) == 1.0  # ×1 and ÷1 are exact: skipped (same bits, fewer passes)
    if not unit:
        d = d * w
    if consensus:
        keep = elect_signs(d.unsqueeze(0))[0]
        d = d * keep
        divisor = torch.where(keep, w, torch.zeros((), dtype=d.dtype, device=d.device))
        divisor[divisor == 0] = 1
    else:
        divisor = w if abs(float(w)) >= 1e-8 else torch.ones((), dtype=d.dtype, device=d.device)
    if normalize and not unit:
        d = d / divisor
    if lam != 1:
        d = d * lam
    return (base + d).to(base.dtype)
