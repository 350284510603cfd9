"""Merge one tensor pair from disk to disk in bounded blocks: the executor's path on the CPU.

Memory is set by the block (IO_BLOCK elements per operand, mapped straight from the input shard
files and unmapped after use; one output buffer per worker), not by the tensor: the 525 M-element
embedding of an 8B model costs what a 4096-element norm weight does. The result, the report
entry and every error are those of `apply.merge_tensor` on the whole tensor (same kernels on the
same blocks, `merge.blockwise`); tests compare files byte for byte.

Each output block is built in a buffer whose address has the same remainder modulo 4 KiB as its
place in the output file, so the planned writer sends it with direct I/O wherever the tensor
starts (a whole-tensor buffer could only do that when the tensor started on a page boundary).
"""

from __future__ import annotations

import math
import threading
from concurrent.futures import Future, wait

import torch

from spear_mm.errors import UserError
from spear_mm.io.checkpoint import dtype_name
from spear_mm.io.direct import PAGE, MappedRange, TensorFile, page_aligned_empty
from spear_mm.io.planned import PlannedWriter
from spear_mm.merge import kernels, methods
from spear_mm.merge.apply import DtypePolicy, all_finite, new_rows
from spear_mm.merge.blockwise import run_spans
from spear_mm.merge.plan import TensorPlan

# Elements per block and operand: 32 MiB of bf16. A multiple of kernels.BLOCK and of mergekit's
# cosine chunk (1 Mi), which block boundaries must respect to give the whole tensor's bits. A
# tensor of one block is mapped once for all the passes of whole-tensor SLERP; at 4 Mi (every MLP
# matrix of a 1B model in three blocks, mapped again on each pass) the 1B SLERP merge took 0.3 s
# more CPU time in page faults and unmapping and ~10% more wall time (docs/benchmarks.md).
IO_BLOCK = 1 << 24
_LOCAL = threading.local()


class _Slots:
    """This thread's two output buffers and the write each one is in flight with: a block is
    built in one while the other's bytes go to the disk (`PlannedWriter.write_at_async`)."""

    def __init__(self):
        self.raw: list[torch.Tensor | None] = [None, None]
        self.busy: list[Future | None] = [None, None]
        self.next = 0
        self.pending: list[Future] = []  # the current tensor's block writes

    def take(self, nbytes: int, skew: int) -> tuple[int, torch.Tensor]:
        i, self.next = self.next, 1 - self.next
        if self.busy[i] is not None:
            wait([self.busy[i]])  # its error, if any, is raised by `wait_written`
            self.busy[i] = None
        raw = self.raw[i]
        if raw is None or raw.numel() < nbytes + PAGE:
            raw = self.raw[i] = page_aligned_empty(max(nbytes, IO_BLOCK * 2) + PAGE)
        return i, raw[skew : skew + nbytes]

    def sent(self, i: int, fut: Future) -> None:
        """Buffer i's bytes are being written by `fut`."""
        self.busy[i] = fut
        self.pending.append(fut)


def _slots() -> _Slots:
    slots = getattr(_LOCAL, "slots", None)
    if slots is None:
        slots = _LOCAL.slots = _Slots()
    return slots


def wait_written(writer: PlannedWriter, name: str, writes: list[Future]) -> None:
    """Wait for tensor `name`'s block writes (`merge_streamed` returns them), raise the first
    one's error, then mark the tensor written."""
    for fut in writes:
        fut.result()
    writer.mark_written(name)


class SpanReader:
    """Elements [first + lo, first + hi) of one tensor in a shard file, mapped one span at a time
    (the previous span is unmapped when the next is read), the next span prefetched. Reading the
    mapped span again (the next pass over a tensor of one span: every attention matrix of a 1B
    model) returns the same view: no second mapping, no page faults."""

    def __init__(self, file: TensorFile, name: str, first: int = 0, raw: bool = False):
        self.file, self.name = file, name
        entry = file.entries[name]
        self.dtype = torch.uint8 if raw else entry.dtype
        self.first = first
        self._mapped: MappedRange | None = None
        self._span: tuple[int, int, torch.Tensor] | None = None

    def read(self, lo: int, hi: int) -> torch.Tensor:
        if self._span is not None and self._span[:2] == (lo, hi):
            return self._span[2]
        self.close()
        size = self.dtype.itemsize
        lo_b, hi_b = (self.first + lo) * size, (self.first + hi) * size
        self._mapped = self.file.map(self.name, lo_b, hi_b)
        self.file.prefetch(self.name, hi_b, 2 * hi_b - lo_b)
        self._span = (lo, hi, self._mapped.data.view(self.dtype))
        return self._span[2]

    def close(self) -> None:
        self._span = None
        if self._mapped is not None:
            self._mapped.close()
            self._mapped = None


class SpanWriter:
    """Output elements [first + lo, first + hi) of one planned tensor: a buffer in the kernel's
    dtype to fill, cast to the output dtype, checked for NaN/Inf and written at its offset."""

    def __init__(
        self,
        writer: PlannedWriter,
        name: str,
        out: torch.dtype,
        kernel: torch.dtype,
        first: int = 0,
        check: bool = True,
    ):
        self.writer, self.name, self.out, self.kernel = writer, name, out, kernel
        self.first, self.check = first, check
        self.verify = check  # this pass's blocks are checked (`TensorBlocks.begin_output`)
        self.finite = True
        self._buf: torch.Tensor | None = None
        self._slot = 0
        self._scratch: torch.Tensor | None = None

    def buffer(self, lo: int, hi: int) -> torch.Tensor:
        start = (self.first + lo) * self.out.itemsize
        skew = (self.writer.file_offset(self.name) + start) % PAGE
        self._slot, raw = _slots().take((hi - lo) * self.out.itemsize, skew)
        self._buf = raw.view(self.out)
        if self.kernel == self.out:
            return self._buf
        self._scratch = torch.empty(hi - lo, dtype=self.kernel)
        return self._scratch

    def commit(self, lo: int, hi: int) -> None:
        if self._scratch is not None:
            self._buf.copy_(self._scratch)  # == merged.to(out)
            self._scratch = None
        if self.verify and not all_finite(self._buf):
            self.finite = False
        start = (self.first + lo) * self.out.itemsize
        _slots().sent(self._slot, self.writer.write_at_async(self.name, start, self._buf))


def _spans(numel: int, unit: int) -> list[tuple[int, int]]:
    step = max(unit, IO_BLOCK // unit * unit)
    return [(lo, min(numel, lo + step)) for lo in range(0, numel, step)]


class TensorBlocks:
    """A pair on disk as `merge.blockwise.Spans`: inputs from two SpanReaders (cast to the
    recipe's compute dtype when it has one), output through a SpanWriter."""

    def __init__(self, a: SpanReader, b: SpanReader, sink: SpanWriter, shape, cast):
        self.a, self.b, self.sink, self.cast = a, b, sink, cast
        self.shape = tuple(shape)
        self.numel = math.prod(self.shape)
        a_dtype, b_dtype = cast or a.dtype, cast or b.dtype
        self.dtype = kernels.compute_dtype(
            torch.empty(0, dtype=a_dtype), torch.empty(0, dtype=b_dtype)
        )

    def spans(self, unit: int) -> list[tuple[int, int]]:
        return _spans(self.numel, unit)

    def inputs(self, lo: int, hi: int) -> tuple[torch.Tensor, torch.Tensor]:
        fa, fb = self.a.read(lo, hi), self.b.read(lo, hi)
        if self.cast is not None:
            fa, fb = fa.to(self.cast), fb.to(self.cast)
        return fa, fb

    def output(self, lo: int, hi: int) -> torch.Tensor:
        return self.sink.buffer(lo, hi)

    def commit(self, lo: int, hi: int) -> None:
        self.sink.commit(lo, hi)

    @property
    def out_max(self) -> float:
        return torch.finfo(self.sink.out).max

    def begin_output(self, check: bool = True) -> None:
        self.sink.finite = True
        self.sink.verify = self.sink.check and check

    def close(self) -> None:
        self.a.close()
        self.b.close()


def _copy(src: SpanReader, sink: SpanWriter, n: int, cast) -> bool:
    """Copy n elements from src to sink (through `cast` first when given); False on NaN/Inf."""
    try:
        for lo, hi in _spans(n, 1):
            x = src.read(lo, hi)
            buf = sink.buffer(lo, hi)
            buf.copy_(x.to(cast) if cast is not None else x)
            sink.commit(lo, hi)
    finally:
        src.close()
    return sink.finite


def merge_streamed(
    name: str,
    kind: str,
    base: tuple[TensorFile, str],
    adapted: TensorFile,
    plan: TensorPlan,
    policy: DtypePolicy,
    writer: PlannedWriter,
) -> tuple[dict, list[Future]]:
    """Merge tensor `name` (the base's is `base[1]` in file `base[0]`) into `writer` block by
    block; return its report entry (`apply.merge_tensor`'s, streamed) and its block writes still
    in flight, for the caller to wait on with `wait_written`.

    The worker does not wait for its last blocks to land before taking the next tensor: on a 1B
    SLERP merge here that wait idled the two workers 0.56 s in all (a direct write returns when
    the device has the bytes), a fifth of the merge. The output buffers stay safe: a buffer is
    reused only once its own write is done (`_Slots.take`)."""
    slots = _slots()
    try:
        entry = _merge_blocks(name, kind, base, adapted, plan, policy, writer)
    except BaseException:
        slots.pending.clear()  # the merge fails: the writer's abort waits for these writes
        raise
    writes, slots.pending = slots.pending, []
    return entry, writes


def _merge_blocks(name, kind, base, adapted, plan, policy, writer) -> dict:
    b_file, b_name = base
    be, ae = b_file.entries[b_name], adapted.entries[name]
    entry: dict = {"t": plan.t, "method": plan.method, "rule": plan.rule}
    if plan.weights is not None:
        entry["weights"] = list(plan.weights)
    if plan.params:
        entry["params"] = dict(plan.params)
    compute, out = policy.resolve(be.dtype, ae.dtype)
    if not (be.dtype.is_floating_point and ae.dtype.is_floating_point):
        raw = SpanWriter(writer, name, torch.uint8, torch.uint8, check=False)
        _copy(SpanReader(adapted, name, raw=True), raw, ae.nbytes, None)
        entry.update(path="copy", source="adapted", dtype=dtype_name(ae.dtype))
        return entry
    extra = new_rows(name, kind, be.shape, ae.shape)
    shared = math.prod(be.shape)
    source = methods.get(plan.method).copy_source(plan, policy.round_to_compute)
    entry["dtype"] = dtype_name(out)
    if extra:
        entry["new_rows"] = extra
    if source is not None:
        picked = SpanReader(*((b_file, b_name) if source == "base" else (adapted, name)))
        entry.update(path="copy", source=source)
        if not _copy(picked, SpanWriter(writer, name, out, out), shared, compute):
            raise UserError(
                f"tensor {name}: the {source} checkpoint's values contain NaN or Inf in "
                f"{dtype_name(out)} (copied at t={plan.t}); fix that checkpoint or pick an "
                "output dtype that holds its range"
            )
    else:
        _kernel_streamed(name, (b_file, b_name), adapted, plan, policy, writer, entry, be.shape)
    if extra:
        grown = SpanReader(adapted, name, first=shared)
        sink = SpanWriter(writer, name, out, out, first=shared)
        if not _copy(grown, sink, math.prod(ae.shape) - shared, None):
            raise UserError(
                f"tensor {name}: the adapted checkpoint's new vocabulary rows contain NaN or "
                "Inf; fix or re-export that checkpoint"
            )
    return entry


def _kernel_streamed(name, base, adapted, plan, policy, writer, entry, shape) -> None:
    compute, out = policy.resolve(base[0].entries[base[1]].dtype, adapted.entries[name].dtype)
    kernel_out = compute if policy.round_to_compute else out
    sink = SpanWriter(writer, name, out, kernel_out)
    io = TensorBlocks(SpanReader(*base), SpanReader(adapted, name), sink, shape, compute)
    try:
        st = run_spans(io, plan, policy.round_to_compute)
    finally:
        io.close()
    entry.update(path=st.path, cos=st.cos)
    if st.fallback:
        entry["fallback"] = True
    if st.max_angle is not None:
        entry["max_angle"] = st.max_angle
    if not sink.finite:
        raise UserError(
            f"tensor {name}: the merged values contain NaN or Inf (t={plan.t}, "
            f"method {plan.method}); check the inputs and the recipe's weights"
        )
