"""The interpolation kernels over a tensor pair streamed in spans: bit for bit the results of the
whole-tensor kernels in `merge.kernels`, with memory set by the span instead of the tensor.

A kernel sees the pair through a `Spans` object (`merge.streamed.TensorBlocks` reads a pair from
disk and writes the result in place; tests use an in-memory one):

- `numel`, `shape` (of the pair), `dtype` (the compute dtype, `kernels.compute_dtype`);
- `spans(unit)`: element ranges [lo, hi) covering the tensor, each starting on a multiple of
  `unit` (the kernel's block, so blocks and their fp64 partial sums are the whole tensor's);
- `inputs(lo, hi)`: flat views of a[lo:hi] and b[lo:hi], valid until the next call;
- `output(lo, hi)`: a flat buffer to fill with out[lo:hi]; `commit(lo, hi)` writes it;
- `begin_output(check)`: a pass that writes the (whole) result starts (the last one counts);
  `check=False` when the kernel proves every value of it finite (`_bounded`), so the sink skips
  its NaN/Inf check of each block;
- `out_max`: the largest finite value of the output dtype.

Whole-tensor SLERP needs the cosine before its coefficients, so it reads the spans more than once
(`slerp_spans`): the first pass takes the sums and, when the cosine of its first elements says
the tensors are too parallel for SLERP (the common case for CPT pairs), writes the LERP result as
it goes; otherwise the first pass only measures and a second writes. A misprediction costs one
more pass, never a different bit.

The sink's NaN/Inf check of every output block (a pass over the output: ~8% of a 1B merge's CPU
time) is skipped where the norms prove the result finite: |c_a·a_i + c_b·b_i| ≤ |c_a|·‖a‖ +
|c_b|·‖b‖, and a NaN or Inf input makes its norm non-finite. A pass written before its norms are
known (LERP) is written unchecked and written again, checked, when the proof fails afterwards
(inputs with NaN, Inf or values near the output dtype's limit: the merge then fails anyway).
"""

from __future__ import annotations

import math
from typing import Protocol

import torch

from spear_mm.merge import kernels as K
from spear_mm.merge.kernels import KernelStats

METHODS = ("lerp", "slerp", "slerp_rowwise", "linear")
MK_CHUNK = 1 << 20  # mergekit_cosine's chunk (its default)
# Elements whose cosine predicts a whole-tensor SLERP's path (`_first_pass`): a quarter of a
# mergekit chunk, so a prediction costs ~1/16 of an attention matrix's sums, and a multiple of
# kernels.ROW.
PREDICT = 1 << 18
# Slack on the norm bound (`_bounded`): fp32 rounding of the two products, their sum and the norms
# is below 1e-5 relative; any margin far above that and far below the dtype's range will do.
BOUND_SLACK = 1.01


class Spans(Protocol):
    numel: int
    shape: tuple[int, ...]
    dtype: torch.dtype

    def spans(self, unit: int) -> list[tuple[int, int]]: ...
    def inputs(self, lo: int, hi: int) -> tuple[torch.Tensor, torch.Tensor]: ...
    def output(self, lo: int, hi: int) -> torch.Tensor: ...
    def commit(self, lo: int, hi: int) -> None: ...
    def begin_output(self, check: bool = True) -> None: ...

    @property
    def out_max(self) -> float: ...


def _bounded(io: Spans, coefs, norm_a: float, norm_b: float) -> bool:
    """Whether coefs[0]·a + coefs[1]·b is finite in the output dtype for inputs of these norms
    (module doc); False for a NaN or infinite norm."""
    bound = abs(float(coefs[0])) * norm_a + abs(float(coefs[1])) * norm_b
    return bound * BOUND_SLACK < io.out_max  # NaN compares False


def _finish(io: Spans, coefs, acc: list[float], written: bool) -> None:
    """Make the output coefs·(a, b) given the first pass's sums (‖a‖², ‖b‖², ‖a − b‖²): one
    combine pass, checked unless the norms bound it; `written`: a pass already wrote exactly
    that, unchecked, and is only written again (checked) when the norms do not bound it."""
    proven = _bounded(io, coefs, math.sqrt(acc[0]), math.sqrt(acc[1]))
    if not (written and proven):
        _combine_pass(io, coefs, check=not proven)


def _combine_pass(io: Spans, coefs, acc: list[float] | None = None, check: bool = True) -> None:
    io.begin_output(check)
    for lo, hi in io.spans(K.BLOCK):
        fa, fb = io.inputs(lo, hi)
        K.combine_span(fa, fb, io.output(lo, hi), *coefs, io.dtype, acc)
        io.commit(lo, hi)


def _lerp_coefs(t: float, dtype) -> tuple[torch.Tensor, torch.Tensor]:
    t_c = torch.tensor(t, dtype=dtype)
    return 1 - t_c, t_c


def lerp_spans(io: Spans, t: float) -> KernelStats:
    """`kernels.lerp` with stats, one pass (unchecked; `_finish` writes it again, checked, in
    the rare case its norms do not prove it finite)."""
    acc = [0.0, 0.0, 0.0]
    lin = _lerp_coefs(t, io.dtype)
    _combine_pass(io, lin, acc, check=False)
    _finish(io, lin, acc, written=True)
    return KernelStats("lerp", K._cosine_from_sums(*acc))


def linear_spans(io: Spans, w_a: float, w_b: float, normalize: bool = True) -> KernelStats:
    """`kernels.linear`, one pass (the cosine's sums are taken from the same spans)."""
    acc = [0.0, 0.0, 0.0]
    io.begin_output()
    for lo, hi in io.spans(K.BLOCK):
        fa, fb = io.inputs(lo, hi)
        K.linear_span(fa, fb, io.output(lo, hi), w_a, w_b, normalize, io.dtype)
        io.commit(lo, hi)
        K.sums_span(fa, fb, io.dtype, acc)
    return KernelStats("lerp", K._cosine_from_sums(*acc))


def _cosine_pass(io: Spans) -> float:
    acc = [0.0, 0.0, 0.0]
    for lo, hi in io.spans(K.BLOCK):
        K.sums_span(*io.inputs(lo, hi), io.dtype, acc)
    return K._cosine_from_sums(*acc)


def slerp_rowwise_spans(io: Spans, t: float) -> KernelStats:
    """`kernels.slerp_rowwise`: spans of whole row batches, then a pass for the cosine (its
    blocks do not line up with row batches)."""
    cols = io.numel // io.shape[0] if len(io.shape) >= 2 and io.shape[0] else io.numel
    max_angle = 0.0
    io.begin_output()
    for lo, hi in io.spans(K.rows_per_block(cols) * cols):
        fa, fb = io.inputs(lo, hi)
        rows = (hi - lo) // cols
        out = io.output(lo, hi).view(rows, cols)
        angle = K.rowwise_span(fa.view(rows, cols), fb.view(rows, cols), out, t, io.dtype)
        max_angle = max(max_angle, angle)
        io.commit(lo, hi)
    return KernelStats("slerp", _cosine_pass(io), max_angle=max_angle)


def slerp_spans(
    io: Spans,
    t: float,
    *,
    mergekit_rounding: bool = False,
    threshold: float = K.DOT_THRESHOLD,
) -> KernelStats:
    """`kernels.slerp` (same decisions, coefficients and bits) in one to three passes."""
    lin = _lerp_coefs(t, io.dtype)
    norms: tuple[list, list] | None = ([], []) if mergekit_rounding else None
    acc = [0.0, 0.0, 0.0]
    written = _first_pass(io, lin, acc, norms, threshold)
    if mergekit_rounding and not written:
        return _mk_slerp(io, t, lin, norms, threshold)
    cos = K._cosine_from_sums(*acc)
    exact_mk = mergekit_rounding and abs(abs(cos) - threshold) <= K.MERGEKIT_BAND
    if exact_mk:
        cos = _mk_cosine(io, norms)
    coef_a, coef_b, linear = K.slerp_coefficients(cos, t, io.dtype, threshold=threshold)
    if linear:
        _finish(io, lin, acc, written)
        return KernelStats("lerp", cos, fallback=True)
    if mergekit_rounding and not exact_mk:
        cos = _mk_cosine(io, norms)
        coef_a, coef_b, linear = K.slerp_coefficients(cos, t, io.dtype, threshold=threshold)
    # linear coefficients are the LERP ones: what a written first pass wrote
    _finish(io, (coef_a, coef_b), acc, written and linear)
    return KernelStats("lerp" if linear else "slerp", cos, fallback=linear)


def _mk_slerp(io: Spans, t: float, lin, norms, threshold: float) -> KernelStats:
    """The SLERP path of a mergekit-format recipe, after a first pass that took mergekit's chunk
    norms (not the accurate sums): its cosine, then the combine.

    `kernels.slerp` decides with the accurate cosine unless it lies within MERGEKIT_BAND of the
    threshold, and then with mergekit's; the two differ by far less than the band (that is what
    the band is), so they decide alike and mergekit's cosine can decide here without the
    accurate one, which costs a subtraction and three norms per element. Only a fallback to LERP
    needs the accurate cosine (it is what `kernels.slerp` reports there, outside the band), and
    its combine pass takes it on the way."""
    cos = _mk_cosine(io, norms)
    coef_a, coef_b, linear = K.slerp_coefficients(cos, t, io.dtype, threshold=threshold)
    # not `mk_norm`, whose ≤ EPS → 1 would turn a NaN norm into 1
    norm_a, norm_b = (float(K.norm_of_parts(n)) for n in norms)
    coefs = lin if linear else (coef_a, coef_b)
    acc = [0.0, 0.0, 0.0] if linear else None
    _combine_pass(io, coefs, acc, check=not _bounded(io, coefs, norm_a, norm_b))
    if not linear:
        return KernelStats("slerp", cos)
    exact = K._cosine_from_sums(*acc)
    return KernelStats(
        "lerp", cos if abs(abs(exact) - threshold) <= K.MERGEKIT_BAND else exact, fallback=True
    )


def _first_pass(io: Spans, lin, acc: list[float], norms, threshold: float) -> bool:
    """Sums of every span into `acc`; returns whether the LERP result was written on the way.

    The cosine of the first PREDICT elements decides what the pass does: beyond the threshold by
    more than MERGEKIT_BAND, LERP is the likely answer and the whole pass writes it; otherwise
    the pass only measures: the accurate sums, or, for a mergekit-format recipe (`norms` given),
    only mergekit's chunk norms (`_mk_slerp`). The prediction's sums are thrown away, so the
    pass's sums run over whole spans in their order and keep their bits; a misprediction costs
    one more pass, never a different bit. (The prediction used to combine the first mergekit chunk
    speculatively into the output: 1 Mi elements combined in vain on every SLERP-path tensor.)"""
    spans = io.spans(math.lcm(K.BLOCK, MK_CHUNK) if norms is not None else K.BLOCK)
    write = None
    for lo, hi in spans:
        fa, fb = io.inputs(lo, hi)
        if write is None:
            write = _predicts_lerp(fa, fb, io.dtype, threshold)
            if write:
                io.begin_output(check=False)  # proven finite after, or written again (`_finish`)
        if write:
            K.combine_span(fa, fb, io.output(lo, hi), *lin, io.dtype, acc)
            io.commit(lo, hi)
        elif norms is not None:
            _add_mk_norms(norms, fa, fb, io.dtype)
        else:
            K.sums_span(fa, fb, io.dtype, acc)
    return write is not False  # an empty tensor: nothing to write, nothing to measure


def _predicts_lerp(fa, fb, dtype, threshold: float) -> bool:
    """Whether the cosine of the first PREDICT elements lies beyond the threshold by more than
    MERGEKIT_BAND (its sums are a sample, thrown away after)."""
    sample = [0.0, 0.0, 0.0]
    K.sums_span(fa[:PREDICT], fb[:PREDICT], dtype, sample)
    return abs(K._cosine_from_sums(*sample)) > threshold + K.MERGEKIT_BAND


def _add_mk_norms(norms: tuple[list, list], fa, fb, dtype) -> None:
    """Append mergekit's chunk norms of the span views fa, fb to norms[0], norms[1]."""
    norms[0].extend(K.mk_norm_parts(fa, dtype, MK_CHUNK))
    norms[1].extend(K.mk_norm_parts(fb, dtype, MK_CHUNK))


def _mk_cosine(io: Spans, norms: tuple[list, list] | None) -> float:
    """`kernels.mergekit_cosine` over the spans: a pass for the chunk norms (unless the first
    pass collected them), one for the dot products."""
    spans = io.spans(math.lcm(K.BLOCK, MK_CHUNK))
    if norms is None or not norms[0]:
        norms = ([], [])
        for lo, hi in spans:
            _add_mk_norms(norms, *io.inputs(lo, hi), io.dtype)
    na, nb = K.mk_norm(norms[0]), K.mk_norm(norms[1])
    parts: list[torch.Tensor] = []
    for lo, hi in spans:
        fa, fb = io.inputs(lo, hi)
        parts.extend(K.mk_dot_parts(fa, fb, na, nb, io.dtype, MK_CHUNK))
    return K.mk_dot(parts)


def run_spans(io: Spans, plan, mergekit_rounding: bool) -> KernelStats:
    """Dispatch `plan.method` (one of METHODS) as `apply` does for whole tensors."""
    if plan.method == "lerp":
        return lerp_spans(io, plan.t)
    if plan.method == "slerp":
        return slerp_spans(io, plan.t, mergekit_rounding=mergekit_rounding)
    if plan.method == "slerp_rowwise":
        return slerp_rowwise_spans(io, plan.t)
    if plan.method == "linear":
        wb, wa = plan.weights or (1.0 - plan.t, plan.t)
        return linear_spans(io, wb, wa, plan.normalize)
    raise ValueError(f"no streamed kernel for method {plan.method}")
