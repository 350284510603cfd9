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
# Elements converted and combined at a time inside a block: elementwise ops on pieces that stay
# in a core's 2 MiB L2 cache run ~2x faster than on a BLOCK's 6 MiB (scripts/bench_kernels.py).
# One thread does best near 128 Ki; in a two-worker merge 256 Ki does (half the torch calls, so
# half the GIL hand-overs between the workers: 1B SLERP merge 3.07-3.18 s against 3.17-3.31 s,
# 8 interleaved rounds, docs/benchmarks.md). Elementwise results and per-row norms do not
# depend on it.
SUB = 1 << 18


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


def _rows_scratch(dtype: torch.dtype, device) -> torch.Tensor:
    """This thread's (3, BLOCK/ROW + 1) buffer of one block's row norms."""
    return _scratch("rows", 3 * (BLOCK // ROW + 1), dtype, device).view(3, -1)


def _sub_norms(s: torch.Tensor, m: int, rows: torch.Tensor, r: int) -> int:
    """Rows 0 and 1 of `s` (first m columns) hold x and y: put x − y in row 2 and the norms of
    the three rows, per ROW elements (a tail shorter than ROW as one row), into rows[:, r:];
    returns the next free column of `rows`."""
    torch.sub(s[0, :m], s[1, :m], out=s[2, :m])
    full = (m // ROW) * ROW
    if full:
        k = full // ROW
        torch.linalg.vector_norm(s[:, :full].view(3, -1, ROW), dim=2, out=rows[:, r : r + k])
        r += k
    if full < m:
        torch.linalg.vector_norm(s[:, full:m], dim=1, keepdim=True, out=rows[:, r : r + 1])
        r += 1
    return r


def _pass(fa, fb, dtype, acc, each=None) -> None:
    """Walk the flat views fa, fb BLOCK by BLOCK: each block is converted to `dtype` SUB
    elements at a time (into this thread's (3, SUB) scratch, rows x, y and x − y), `each(lo,
    hi, x, y)` is called on every piece, and with `acc` (three fp64 sums) the block's
    (‖a‖², ‖b‖², ‖a − b‖²) are added in order.

    The sums are taken per row of ROW elements in the compute dtype and combined in fp64 per
    block, the dot product then following as (‖x‖² + ‖y‖² − ‖x − y‖²)/2: a fused norm is several
    times faster than a product-and-sum, and for nearly parallel tensors the small ‖x − y‖² keeps
    1 − cos accurate. Each row is reduced by one thread and a block has at most BLOCK/ROW rows
    (a serial fp64 sum), so the result does not depend on the thread count, nor on SUB (rows are
    reduced independently; SUB is a multiple of ROW). A span starting on a multiple of BLOCK of a
    longer tensor continues that tensor's sums exactly: how `merge.blockwise` streams a tensor.
    """
    n = fa.numel()
    s = _scratch("xyd", 3 * SUB, dtype, fa.device).view(3, SUB)
    rows = _rows_scratch(dtype, fa.device) if acc is not None else None
    for lo, hi in _blocks(n):
        r = 0
        for p in range(lo, hi, SUB):
            q = min(hi, p + SUB)
            x, y = s[0, : q - p].copy_(fa[p:q]), s[1, : q - p].copy_(fb[p:q])
            if rows is not None:
                r = _sub_norms(s, q - p, rows, r)
            if each is not None:
                each(p, q, x, y)
        if rows is not None:
            for i, part in enumerate(rows[:, :r].double().square().sum(dim=1).tolist()):
                acc[i] += part


def tensor_cosine(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float, float]:
    """(cos, ‖a‖, ‖b‖) of two same-shape tensors, fp64-accumulated, deterministic.

    A zero (≤ EPS) norm is replaced by 1 before dividing, as mergekit does, so the cosine of a
    zero tensor with anything is 0 rather than NaN.
    """
    _check_pair(a, b)
    acc = [0.0, 0.0, 0.0]
    sums_span(a.reshape(-1), b.reshape(-1), compute_dtype(a, b), acc)
    saa, sbb, sdd = acc
    return _cosine_from_sums(saa, sbb, sdd), math.sqrt(saa), math.sqrt(sbb)


def sums_span(fa, fb, dtype, acc: list[float]) -> None:
    """Add (‖a‖², ‖b‖², ‖a − b‖²) of the flat views fa, fb to `acc` (`_pass`)."""
    _pass(fa, fb, dtype, acc)


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
    fa, fb = a.reshape(-1), b.reshape(-1)
    na = mk_norm(mk_norm_parts(fa, dtype, chunk))
    nb = mk_norm(mk_norm_parts(fb, dtype, chunk))
    return mk_dot(mk_dot_parts(fa, fb, na, nb, dtype, chunk))


# mergekit_cosine in pieces, so `merge.blockwise` can take it over a tensor streamed in spans
# that start on multiples of the chunk: per-chunk norms, their norm, per-chunk normalised dot
# products, their sum. The same operations on the same chunks give the same bits.
def _mk_conv(slot: str, v: torch.Tensor, lo: int, hi: int, dtype, width: int) -> torch.Tensor:
    """v[lo:hi] as a (1, hi - lo) tensor of `dtype` in this thread's scratch."""
    buf = _scratch(slot, width, dtype, v.device)
    return buf[: hi - lo].view(1, -1).copy_(v[lo:hi].view(1, -1))


def mk_norm_parts(v: torch.Tensor, dtype, chunk: int = 1 << 20) -> list[torch.Tensor]:
    """mergekit's fp32 norm of each `chunk` of the flat view v, in order."""
    n, width = v.numel(), min(chunk, v.numel())
    return [
        torch.linalg.vector_norm(
            _mk_conv("mk_x", v, lo, min(lo + chunk, n), dtype, width), dim=1, keepdim=True
        )
        for lo in range(0, n, chunk)
    ]


def norm_of_parts(parts: list[torch.Tensor]) -> torch.Tensor:
    """The tensor norm from its chunk norms, as mergekit takes it (NaN and Inf stay)."""
    return torch.linalg.vector_norm(torch.stack(parts), dim=0)


def mk_norm(parts: list[torch.Tensor]) -> torch.Tensor:
    """`norm_of_parts`, with ≤ EPS counting as 1 (mergekit's divisor)."""
    n = norm_of_parts(parts)
    return torch.where(n > EPS, n, 1)


def mk_dot_parts(fa, fb, na, nb, dtype, chunk: int = 1 << 20) -> list[torch.Tensor]:
    """Per chunk, the sum of (a / ‖a‖)·(b / ‖b‖) in `dtype`, in order. The products are formed
    SUB elements at a time (in cache) into the chunk's row, which is then summed whole: the
    same elements reduced the same way as mergekit's one-shot expression."""
    n, width = fa.numel(), min(chunk, fa.numel())
    row = _scratch("mk_x", width, dtype, fa.device).view(1, -1)
    y = _scratch("mk_y", min(SUB, width), dtype, fa.device)
    parts = []
    for lo in range(0, n, chunk):
        m = min(lo + chunk, n) - lo
        for p in range(0, m, SUB):
            q = min(m, p + SUB)
            x = row[0, p:q].copy_(fa[lo + p : lo + q]).div_(na[0])
            x.mul_(y[: q - p].copy_(fb[lo + p : lo + q]).div_(nb[0]))
        parts.append(row[:, :m].sum(dim=1, keepdim=True))
    return parts


def mk_dot(parts: list[torch.Tensor]) -> float:
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

    With `sums`, also returns (‖a‖², ‖b‖², ‖a − b‖²) from the same pass (see _pass)."""
    out = _result(a, dtype, out_dtype, out)
    acc = [0.0, 0.0, 0.0] if sums else None
    combine_span(a.reshape(-1), b.reshape(-1), out.view(-1), coef_a, coef_b, dtype, acc)
    return (out, _cosine_from_sums(*acc)) if sums else out


def combine_span(fa, fb, fo, coef_a, coef_b, dtype, acc=None) -> None:
    """fo = coef_a·fa + coef_b·fb over flat views; with `acc` (three fp64 sums) also adds each
    block's (‖a‖², ‖b‖², ‖a − b‖²) in order (`_pass`)."""

    def each(lo, hi, x, y):  # scaled in the scratch copies, never the caller's tensors
        fo[lo:hi].copy_(x.mul_(coef_a).add_(y.mul_(coef_b)))

    _pass(fa, fb, dtype, acc, each)


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


def rows_per_block(row_len: int) -> int:
    """Rows that row-wise SLERP processes at once (about BLOCK elements, at least one row)."""
    return max(1, BLOCK // max(1, row_len))


def rowwise_span(ra, rb, ro, t: float, dtype) -> float:
    """Row-wise SLERP of the 2-D row views ra, rb into ro, `rows_per_block` rows at a time;
    returns the largest row angle. Rows are independent, so a span of whole row batches of a
    longer tensor gives that tensor's rows exactly."""
    step, max_angle = rows_per_block(ra.shape[1]), 0.0
    for lo in range(0, ra.shape[0], step):
        hi = min(ra.shape[0], lo + step)
        x, y = ra[lo:hi].to(dtype), rb[lo:hi].to(dtype)
        coef_a, coef_b, theta = _rowwise_coefficients(x, y, t)
        max_angle = max(max_angle, float(theta.max()))
        ro[lo:hi].copy_((x * coef_a).add_(y * coef_b))
    return max_angle


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
    max_angle = rowwise_span(ra, rb, _rows(out), t, dtype)
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
    out = _result(a, dtype, out_dtype, out)
    linear_span(a.reshape(-1), b.reshape(-1), out.view(-1), w_a, w_b, normalize, dtype)
    return out, KernelStats("lerp", tensor_cosine(a, b)[0])


def linear_span(fa, fb, fo, w_a: float, w_b: float, normalize: bool, dtype) -> None:
    """fo = (w_a·fa + w_b·fb) [/ (w_a + w_b)] over flat views, BLOCK by BLOCK (elementwise, so
    any span gives the whole tensor's values)."""
    wa, wb = _coef(w_a, dtype, fa.device), _coef(w_b, dtype, fa.device)
    denom = torch.stack([wa, wb]).sum()
    for lo, hi in _blocks(fa.numel()):
        acc = torch.zeros(hi - lo, dtype=dtype, device=fa.device)
        acc.addcmul_(fa[lo:hi].to(dtype), wa)
        acc.addcmul_(fb[lo:hi].to(dtype), wb)
        if normalize:
            acc.div_(denom)
        fo[lo:hi].copy_(acc)
