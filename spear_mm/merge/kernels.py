"""Pure interpolation kernels: LERP, whole-tensor SLERP (mergekit semantics), row-wise SLERP.

Conventions shared by every kernel:

- `a` is the base tensor, `b` the adapted one and `t` the weight of the adapted tensor, so `t = 0`
  gives `a` and `t = 1` gives `b` (the executor takes a copy path for those; the kernels still
  return them exactly for finite inputs).
- Compute is fp32 (fp64 when both inputs are fp64) whatever the input dtype; the result is written
  block by block into a tensor of `out_dtype` (default: the compute dtype), so scratch memory is a
  few MiB whatever the tensor size.
- Reductions (norms, dot products) are taken row-wise over fixed blocks of `ROW` elements and the
  partial sums are added in fp64, in a fixed order. PyTorch splits a reduction to one scalar across
  its intra-op threads (the result then depends on the thread count); a reduction along rows runs
  each row on one thread, so these kernels give bit-identical results for any thread count.
- Coefficients are evaluated in the compute dtype with the same operation order as mergekit 0.1.5
  (`coef_a * a + coef_b * b`, two products then one sum), so the `lerp`/`slerp` results agree with
  mergekit to within one unit in the last place of the output dtype.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass

import torch

# |cos| above which whole-tensor SLERP falls back to linear interpolation (mergekit's threshold).
DOT_THRESHOLD = 0.9995
# mergekit's own fp32 cosine runs below the exact one (measured: -7e-5 to -8e-5 on 4M- to
# 65M-element bf16 pairs); within this distance of the threshold its value decides instead.
MERGEKIT_BAND = 3e-4
# Norms at or below this count as zero (the direction is undefined); mergekit uses the same.
EPS = 1e-8
# Elements per processing block and per reduction row. A block's fp32 scratch (a, b, a - b: 6 MiB)
# stays in the L3 cache; each block costs ~15 small torch calls, so smaller blocks lose to Python
# overhead. SLERP on a 2048x5632 bf16 pair, one thread (ns/element, scripts/bench_kernels.py):
# 64K 1.84, 256K 1.18, 512K 1.07, 1M 1.05, 2M 1.27.
BLOCK = 1 << 19
ROW = 1024


@dataclass(frozen=True)
class KernelStats:
    """What a kernel did: `path` is `lerp` or `slerp`; `cos` the whole-tensor cosine (fp64
    accumulation, None when not computed); `fallback` is True when SLERP was asked for but the
    tensors were too parallel and linear interpolation was used; `max_angle` (radians) is the
    largest row angle for row-wise SLERP; `extra`: method-specific report fields (e.g. the kept
    fraction and seed of a task-vector method)."""

    path: str
    cos: float | None = None
    fallback: bool = False
    max_angle: float | None = None
    extra: dict | None = None


_SCRATCH = threading.local()


def _scratch(slot: str, n: int, dtype: torch.dtype, device) -> torch.Tensor:
    """This thread's reusable 1-D buffer `slot` of n elements (contents undefined).

    Blocks are converted into scratch instead of fresh tensors: a fresh multi-MiB tensor per
    block costs page faults and zeroing (most of a streaming merge's system time, measured), and
    kernels run on pool threads, so each thread keeps its own. Elementwise results are the same
    whether written to a new tensor or a buffer, so this changes no bits.
    """
    cache = getattr(_SCRATCH, "bufs", None)
    if cache is None:
        cache = _SCRATCH.bufs = {}
    key = (slot, dtype, str(device))
    buf = cache.get(key)
    if buf is None or buf.numel() < n:
        buf = cache[key] = torch.empty(n, dtype=dtype, device=device)
    return buf[:n]


def compute_dtype(a: torch.Tensor, b: torch.Tensor) -> torch.dtype:
    """fp64 only when both inputs are fp64, else fp32."""
    if a.dtype == torch.float64 and b.dtype == torch.float64:
        return torch.float64
    return torch.float32


def _check_pair(a: torch.Tensor, b: torch.Tensor) -> None:
    if a.shape != b.shape:
        raise ValueError(f"shape mismatch {tuple(a.shape)} vs {tuple(b.shape)}")
    if not (a.is_floating_point() and b.is_floating_point()):
        raise TypeError("interpolation needs floating-point tensors")


def _blocks(n: int, block: int = BLOCK):
    for start in range(0, n, block):
        yield start, min(n, start + block)


def _stack(n: int, dtype: torch.dtype, device) -> torch.Tensor:
    """This thread's (3, n) scratch: a block of a, the same block of b, and their difference."""
    return _scratch("xyd", 3 * n, dtype, device).view(3, n)


def _load(s: torch.Tensor, fa: torch.Tensor, fb: torch.Tensor, lo: int, hi: int):
    """Convert a[lo:hi] and b[lo:hi] into rows 0 and 1 of the scratch `s`; returns the two views."""
    m = hi - lo
    return s[0, :m].copy_(fa[lo:hi]), s[1, :m].copy_(fb[lo:hi])


def _block_sums(s: torch.Tensor, m: int) -> tuple[float, float, float]:
    """(‖x‖², ‖y‖², ‖x − y‖²) of the block held in rows 0 and 1 of `s` (first m columns), in the
    compute dtype per row of ROW elements (the tail as one row), combined in fp64. Row 2 receives
    x − y.

    The dot product comes from these as (‖x‖² + ‖y‖² − ‖x − y‖²)/2: a fused norm is several
    times faster than a product-and-sum, and for nearly parallel tensors the small ‖x − y‖² keeps
    1 − cos accurate. Each row is reduced by one thread and a block has at most BLOCK/ROW rows
    (a serial fp64 sum), so the result does not depend on the thread count.
    """
    torch.sub(s[0, :m], s[1, :m], out=s[2, :m])
    full = (m // ROW) * ROW
    parts = []
    if full:
        parts.append(torch.linalg.vector_norm(s[:, :full].view(3, -1, ROW), dim=2))
    if full < m:
        parts.append(torch.linalg.vector_norm(s[:, full:m], dim=1, keepdim=True))
    rows = torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]
    saa, sbb, sdd = rows.double().square().sum(dim=1).tolist()
    return saa, sbb, sdd


def tensor_cosine(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float, float]:
    """(cos, ‖a‖, ‖b‖) of two same-shape tensors, fp64-accumulated, deterministic.

    A zero (≤ EPS) norm is replaced by 1 before dividing, as mergekit does, so the cosine of a
    zero tensor with anything is 0 rather than NaN.
    """
    _check_pair(a, b)
    dtype = compute_dtype(a, b)
    fa, fb = a.reshape(-1), b.reshape(-1)
    saa = sbb = sdd = 0.0
    stack = _stack(min(BLOCK, fa.numel()), dtype, a.device)
    for lo, hi in _blocks(fa.numel()):
        _load(stack, fa, fb, lo, hi)
        pa, pb, pd = _block_sums(stack, hi - lo)
        saa, sbb, sdd = saa + pa, sbb + pb, sdd + pd
    return _cosine_from_sums(saa, sbb, sdd), math.sqrt(saa), math.sqrt(sbb)


def mergekit_cosine(a: torch.Tensor, b: torch.Tensor, chunk: int = 1 << 20) -> float:
    """The cosine exactly as mergekit 0.1.5's SLERP rounds it, for bit-level parity.

    mergekit takes fp32 norms per 1M-element chunk, the norm of those, then sums the products of
    the normalised chunks in fp32. That sum can be off by ~1e-4 relative on a few-million-element
    tensor (measured), which moves the SLERP coefficients by far more than an fp32 ulp; so
    mergekit-format recipes use this value to give mergekit's tensors, and native recipes use the
    accurate `tensor_cosine`. Reproduces mergekit for an unbatched tensor; mergekit packs
    several small same-shape tensors into one batch, which can change its own rounding.
    """
    dtype = compute_dtype(a, b)
    x, y = a.reshape(1, -1), b.reshape(1, -1)
    spans = [(lo, min(lo + chunk, x.shape[1])) for lo in range(0, x.shape[1], chunk)]
    width = min(chunk, x.shape[1])
    sx = _scratch("mk_x", width, dtype, a.device)
    sy = _scratch("mk_y", width, dtype, a.device)

    def conv(buf, v, lo, hi):  # == v[:, lo:hi].to(dtype), into scratch
        return buf[: hi - lo].view(1, -1).copy_(v[:, lo:hi])

    def norm(v):
        parts = [
            torch.linalg.vector_norm(conv(sx, v, lo, hi), dim=1, keepdim=True) for lo, hi in spans
        ]
        n = torch.linalg.vector_norm(torch.stack(parts), dim=0)
        return torch.where(n > EPS, n, 1)

    na, nb = norm(x), norm(y)
    parts = [
        conv(sx, x, lo, hi).div_(na).mul_(conv(sy, y, lo, hi).div_(nb)).sum(dim=1, keepdim=True)
        for lo, hi in spans
    ]
    return float(torch.stack(parts).sum(dim=0).clamp(-1, 1))


def _result(a: torch.Tensor, dtype, out_dtype, out: torch.Tensor | None) -> torch.Tensor:
    """The output tensor: `out` when given (a caller's reusable buffer; checked), else new."""
    want = out_dtype or dtype
    if out is None:
        return torch.empty(a.shape, dtype=want, device=a.device)
    if out.shape != a.shape or out.dtype != want or out.device != a.device:
        raise ValueError(f"out is {out.dtype} {tuple(out.shape)}, need {want} {tuple(a.shape)}")
    return out


def _combine(a, b, coef_a, coef_b, dtype, out_dtype, sums: bool = False, out=None):
    """out = coef_a·a + coef_b·b block by block (two products, one sum: mergekit's order).

    With `sums`, also returns (‖a‖², ‖b‖², ‖a − b‖²) from the same pass (see _block_sums)."""
    out = _result(a, dtype, out_dtype, out)
    fa, fb, fo = a.reshape(-1), b.reshape(-1), out.view(-1)
    acc = [0.0, 0.0, 0.0]
    stack = _stack(min(BLOCK, fa.numel()), dtype, a.device)
    for lo, hi in _blocks(fa.numel()):
        # Copies into scratch: scaling in place must never touch the caller's tensor.
        x, y = _load(stack, fa, fb, lo, hi)
        if sums:
            acc = [s + p for s, p in zip(acc, _block_sums(stack, hi - lo))]
        fo[lo:hi].copy_(x.mul_(coef_a).add_(y.mul_(coef_b)))
    return (out, _cosine_from_sums(*acc)) if sums else out


def _cosine_from_sums(saa: float, sbb: float, sdd: float) -> float:
    na, nb = math.sqrt(saa), math.sqrt(sbb)
    denom = (na if na > EPS else 1.0) * (nb if nb > EPS else 1.0)
    return max(-1.0, min(1.0, (saa + sbb - sdd) / 2 / denom))


def _coef(value: float, dtype: torch.dtype, device) -> torch.Tensor:
    return torch.tensor(value, dtype=dtype, device=device)


def lerp(
    a: torch.Tensor,
    b: torch.Tensor,
    t: float,
    *,
    out_dtype: torch.dtype | None = None,
    stats: bool = True,
    out: torch.Tensor | None = None,
) -> tuple[torch.Tensor, KernelStats]:
    """(1 − t)·a + t·b in the compute dtype; `stats=False` skips the cosine (faster). `out`: a
    buffer of a's shape and the output dtype to write into (every kernel takes one)."""
    _check_pair(a, b)
    dtype = compute_dtype(a, b)
    t_c = _coef(t, dtype, a.device)
    if not stats:
        return _combine(a, b, 1 - t_c, t_c, dtype, out_dtype, out=out), KernelStats("lerp")
    out, cos = _combine(a, b, 1 - t_c, t_c, dtype, out_dtype, sums=True, out=out)
    return out, KernelStats("lerp", cos)


def slerp_coefficients(
    cos: float, t: float, dtype: torch.dtype = torch.float32, *, threshold: float = DOT_THRESHOLD
) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """(coef_a, coef_b, linear) of whole-tensor SLERP for a given cosine, in `dtype`.

    linear (fallback) when |cos| > threshold: coef_a = 1 − t, coef_b = t. Otherwise
    θ = acos(cos), coef_a = sin((1 − t)θ)/sin θ, coef_b = sin(tθ)/sin θ — evaluated in `dtype`
    like mergekit, so the coefficients round the same way.
    """
    dot = _coef(cos, dtype, "cpu").clamp(-1, 1)
    t_c = _coef(t, dtype, "cpu")
    if bool(dot.abs() > threshold):
        return 1 - t_c, t_c, True
    theta = torch.acos(dot)
    sin_theta = torch.sin(theta)
    return torch.sin((1 - t_c) * theta) / sin_theta, torch.sin(t_c * theta) / sin_theta, False


def slerp(
    a: torch.Tensor,
    b: torch.Tensor,
    t: float,
    *,
    out_dtype: torch.dtype | None = None,
    threshold: float = DOT_THRESHOLD,
    mergekit_rounding: bool = False,
    out: torch.Tensor | None = None,
) -> tuple[torch.Tensor, KernelStats]:
    """Whole-tensor SLERP with mergekit 0.1.5's semantics.

    The flattened tensors' cosine decides the angle; above `threshold` in absolute value the
    result is plain linear interpolation (`stats.fallback`). The coefficients apply to the raw
    (unnormalised) tensors, so for tensors of equal norm the result stays on their sphere.
    Base-vs-CPT pairs are usually above the threshold: then this is exactly `lerp`.

    One pass for that common case: the LERP result and the cosine come from the same blocks
    while they are in cache, and only a tensor below the threshold is combined again with its
    SLERP coefficients. `mergekit_rounding` decides as mergekit would: its cosine is computed
    (`mergekit_cosine`) when the accurate one lies within MERGEKIT_BAND of the threshold, and
    gives the SLERP coefficients. `stats.cos` is the cosine that decided.
    """
    dtype = compute_dtype(a, b)
    out, st = lerp(a, b, t, out_dtype=out_dtype, out=out)  # checks the pair
    cos = st.cos
    exact_mk = mergekit_rounding and abs(abs(cos) - threshold) <= MERGEKIT_BAND
    if exact_mk:
        cos = mergekit_cosine(a, b)
    coef_a, coef_b, linear = slerp_coefficients(cos, t, dtype, threshold=threshold)
    if linear:
        return out, KernelStats("lerp", cos, fallback=True)
    if mergekit_rounding and not exact_mk:
        cos = mergekit_cosine(a, b)
        coef_a, coef_b, linear = slerp_coefficients(cos, t, dtype, threshold=threshold)
    out = _combine(a, b, coef_a.to(a.device), coef_b.to(a.device), dtype, out_dtype, out=out)
    return out, KernelStats("lerp" if linear else "slerp", cos, fallback=linear)


def _rows(x: torch.Tensor) -> torch.Tensor:
    """2-D view: dim 0 stays (output features, or vocabulary rows); 0/1-D tensors are one row."""
    return x.reshape(1, -1) if x.dim() < 2 else x.reshape(x.shape[0], -1)


def _rowwise_coefficients(x: torch.Tensor, y: torch.Tensor, t: float):
    """Per-row (coef_a, coef_b, angle) for a block of rows, in x's dtype.

    θ = 2·atan2(‖â − b̂‖, ‖â + b̂‖) is accurate to ~1 ulp even when the rows are almost parallel,
    where acos(â·b̂) loses half its digits. sin(kθ)/sin θ is written with sinc so θ → 0 tends to
    plain LERP without a threshold or a division by zero. Rows with a zero norm get θ = 0.
    """
    na = torch.linalg.vector_norm(x, dim=1, keepdim=True)
    nb = torch.linalg.vector_norm(y, dim=1, keepdim=True)
    degenerate = (na <= EPS) | (nb <= EPS)
    ua = x / torch.where(degenerate, 1, na)
    ub = y / torch.where(degenerate, 1, nb)
    diff = torch.linalg.vector_norm(ua - ub, dim=1, keepdim=True)
    summ = torch.linalg.vector_norm(ua + ub, dim=1, keepdim=True)
    theta = torch.where(degenerate, 0, 2 * torch.atan2(diff, summ))
    pi = math.pi
    base = torch.sinc(theta / pi)
    coef_a = (1 - t) * torch.sinc((1 - t) * theta / pi) / base
    coef_b = t * torch.sinc(t * theta / pi) / base
    return coef_a, coef_b, theta


def slerp_rowwise(
    a: torch.Tensor,
    b: torch.Tensor,
    t: float,
    *,
    out_dtype: torch.dtype | None = None,
    out: torch.Tensor | None = None,
) -> tuple[torch.Tensor, KernelStats]:
    """Row-wise SLERP with a stable angle and no linear fallback.

    Each row of dim 0 (an output neuron of a Linear weight, a token of an embedding) is
    interpolated on its own great circle: out_r = sin((1−t)θ_r)/sin θ_r · a_r + sin(tθ_r)/sin θ_r ·
    b_r. A CPT pair whose whole-tensor cosine is 0.9999 still has rows that turned by much more than
    the average; those rows get a genuinely spherical path (their norm is kept instead of shrinking
    as under LERP), and rows that did not move reduce to LERP smoothly. 0-D and 1-D tensors (norm
    weights) are one row. Stats: whole-tensor cosine and the largest row angle.
    """
    _check_pair(a, b)
    dtype = compute_dtype(a, b)
    ra, rb = _rows(a), _rows(b)
    out = _result(a, dtype, out_dtype, out)
    ro = _rows(out)
    step = max(1, BLOCK // max(1, ra.shape[1]))
    max_angle = 0.0
    for lo in range(0, ra.shape[0], step):
        hi = min(ra.shape[0], lo + step)
        x, y = ra[lo:hi].to(dtype), rb[lo:hi].to(dtype)
        coef_a, coef_b, theta = _rowwise_coefficients(x, y, t)
        max_angle = max(max_angle, float(theta.max()))
        ro[lo:hi].copy_((x * coef_a).add_(y * coef_b))
    cos = tensor_cosine(a, b)[0]
    return out, KernelStats("slerp", cos, max_angle=max_angle)


def linear(
    a: torch.Tensor,
    b: torch.Tensor,
    w_a: float,
    w_b: float,
    *,
    normalize: bool = True,
    out_dtype: torch.dtype | None = None,
    out: torch.Tensor | None = None,
) -> tuple[torch.Tensor, KernelStats]:
    """mergekit's `linear` method for two inputs: (w_a·a + w_b·b) / (w_a + w_b) (no division
    when `normalize` is False), accumulated the way mergekit does so results match it."""
    _check_pair(a, b)
    dtype = compute_dtype(a, b)
    wa, wb = _coef(w_a, dtype, a.device), _coef(w_b, dtype, a.device)
    denom = torch.stack([wa, wb]).sum()
    out = _result(a, dtype, out_dtype, out)
    fa, fb, fo = a.reshape(-1), b.reshape(-1), out.view(-1)
    for lo, hi in _blocks(fa.numel()):
        acc = torch.zeros(hi - lo, dtype=dtype, device=a.device)
        acc.addcmul_(fa[lo:hi].to(dtype), wa)
        acc.addcmul_(fb[lo:hi].to(dtype), wb)
        if normalize:
            acc.div_(denom)
        fo[lo:hi].copy_(acc)
    return out, KernelStats("lerp", tensor_cosine(a, b)[0])
