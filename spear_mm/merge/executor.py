"""Streaming merge to disk: read tensor pairs in the adapted checkpoint's order, merge, write in place.

Memory stays bounded by the tensors in flight, not by shards: the main thread reads one tensor pair
at a time with positioned reads into memory it owns (`CheckpointReader.read`: no memory maps, each
shard's file opened once), at most `threads + 1` such pairs (and at most MAX_INFLIGHT_BYTES of
inputs) are in the kernel pool (tensors streamed block by block from disk hold nothing until a
worker takes them: QUEUE_PER_THREAD of them may wait per worker), and each worker writes its
result straight to its pre-planned offset in the output shard (`io.planned.PlannedWriter`), so
nothing is buffered per shard. Output offsets
are fixed before any kernel runs and every kernel is deterministic for any thread count, so the
output is bit-identical for any `threads`.

Everything that can be checked before writing is checked first (recipe, names, shapes, device), so
a bad recipe leaves nothing on disk; an error during the merge (e.g. a NaN) removes the partial
output (io.atomic).
"""

from __future__ import annotations

import gc
import os
import time
from collections import Counter, deque
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from spear_mm.errors import UserError
from spear_mm.io.archmap import classify, is_tied
from spear_mm.io.archmap import num_layers as config_layers
from spear_mm.io.checkpoint import CheckpointReader, dtype_name
from spear_mm.io.direct import BufferPool
from spear_mm.io.planned import PlannedWriter
from spear_mm.merge import blockwise
from spear_mm.merge.apply import DtypePolicy, merge_tensor, new_rows
from spear_mm.merge.plan import TensorPlan
from spear_mm.merge.recipe import Recipe, check_match_patterns
from spear_mm.merge.report import build_report
from spear_mm.merge.streamed import merge_streamed, wait_written

REPORT_FILE = "merge_report.json"
# Input bytes the kernel pool may hold at once (beyond one pair): bounds RSS on wide vocabularies.
MAX_INFLIGHT_BYTES = 256 * 1024 * 1024
# Streamed tensors queued per worker. They hold no memory until a worker takes them, and results
# are collected in order, so a short queue idles a worker behind the head of the line: with
# `threads + 1` the second worker waited out each embedding (0.4 s of a 3.4 s 1B merge, idle).
QUEUE_PER_THREAD = 8
RECIPE_COPY = "merge_recipe.yaml"
# Workers when none are asked for: one per CPU this process may use, at most this many. Each
# streaming worker adds ~110 MB of blocks (1B SLERP pair: peak RSS 388 MB with 1 worker, 487-507
# with 2), so 4 stay near 0.7 GB; the merge is CPU-bound (same pair on the 2-core VM: 2 workers
# 3.4-3.6 s, 1 worker 4.9-7.0 s; docs/benchmarks.md).
MAX_AUTO_THREADS = 4


@dataclass
class MergeJob:
    """The checked, ready-to-run merge: readers, the ordered names and their plans."""

    recipe: Recipe
    base: CheckpointReader
    adapted: CheckpointReader
    names: list[str]
    base_names: dict[str, str]
    plans: dict[str, TensorPlan]
    num_layers: int
    tied: bool

    def close(self) -> None:
        self.base.close()
        self.adapted.close()


def check_device(device: str) -> str:
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise UserError(f"--device {device!r}: allowed cpu or cuda")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is available here; use --device cpu")
    return device


def prepare(recipe: Recipe, *, allow_pickle: bool = False) -> MergeJob:
    """Open both checkpoints, plan every tensor and check names and shapes (no writes)."""
    base_dir, adapted_dir = recipe.model_folders()
    base = CheckpointReader(base_dir, allow_pickle=allow_pickle)
    adapted = CheckpointReader(adapted_dir, allow_pickle=allow_pickle)
    try:
        try:
            layers = config_layers(adapted.config)
        except KeyError:
            raise UserError(f"config.json of {adapted_dir} has no num_hidden_layers") from None
        _check_same_architecture(base, adapted, layers)
        check_match_patterns(recipe, adapted.names)
        tied = is_tied(adapted.config, adapted.names)
        # A tied model's lm_head is the embedding: writing it separately would untie it.
        names = [n for n in adapted.names if not (tied and classify(n).kind == "lm_head")]
        base_names = {n: _base_name(n, base, adapted_dir, base_dir) for n in names}
        plans = recipe.plan(names, layers)
        for n in names:
            new_rows(n, classify(n).kind, base.meta(base_names[n])[1], adapted.meta(n)[1])
    except BaseException:
        base.close()
        adapted.close()
        raise
    return MergeJob(recipe, base, adapted, names, base_names, plans, layers, tied)


def _check_same_architecture(
    base: CheckpointReader, adapted: CheckpointReader, layers: int
) -> None:
    """Same block count, and no base tensor the adapted model lacks (lm_head aside: tying may
    differ). A base with more layers would otherwise be silently cut to the adapted depth."""
    try:
        base_layers = config_layers(base.config)
    except KeyError:
        base_layers = layers
    if base_layers != layers:
        raise UserError(
            f"base {base.folder} has {base_layers} layers but adapted {adapted.folder} has "
            f"{layers}; the two must be the same architecture"
        )
    extra = [n for n in base.names if n not in adapted and classify(n).kind != "lm_head"]
    if extra:
        raise UserError(
            f"tensor {extra[0]} is in the base model {base.folder} but not in the adapted "
            f"{adapted.folder}; the two must be the same architecture"
        )


def check_output_folder(out: str | Path, job: MergeJob) -> None:
    """Refuse an output folder that is, or contains, an input: replacing it would delete the
    checkpoint being read (with --force) or give a misleading 'already exists'."""
    target = Path(out).expanduser().resolve()
    for role, reader in (("base", job.base), ("adapted", job.adapted)):
        src = reader.folder.resolve()
        if target == src or target in src.parents:
            raise UserError(
                f"--out {out} is the {role} model folder {reader.folder} or holds it; "
                "write the merge to a new folder"
            )


def _base_name(name: str, base: CheckpointReader, adapted_dir: Path, base_dir: Path) -> str:
    if name in base:
        return name
    if classify(name).kind == "lm_head" and is_tied(base.config, base.names):
        embed = [n for n in base.names if classify(n).kind == "embed"]
        if embed:  # base ties lm_head to its embedding; adapted untied it during CPT
            return embed[0]
    raise UserError(
        f"tensor {name} is in the adapted model {adapted_dir} but not in the base "
        f"{base_dir}; the two must be the same architecture"
    )


def run_merge(
    recipe: Recipe,
    out: str | Path,
    *,
    force: bool = False,
    threads: int | None = None,
    device: str = "cpu",
    shard_size: int | str = "5GB",
    allow_pickle: bool = False,
    progress: bool = True,
    direct_io: bool | None = None,
) -> dict:
    """Merge `recipe` into the folder `out` and return the report (also written beside the
    weights as merge_report.json). `threads`: workers (None: `default_threads()`); the files are
    the same for any number. `direct_io`: None picks by file system, False never
    (`io.planned.PlannedWriter`); the files are the same either way."""
    if threads is None:
        threads = default_threads()
    if threads < 1:
        raise UserError(f"--threads {threads}: must be at least 1")
    device = check_device(device)
    job = prepare(recipe, allow_pickle=allow_pickle)
    try:
        check_output_folder(out, job)
    except UserError:
        job.close()
        raise
    policy = DtypePolicy(recipe.out_dtype, recipe.compute_dtype, recipe.round_to_compute)
    start = time.perf_counter()
    try:
        with PlannedWriter(
            out,
            output_layout(job, policy),
            source_dir=job.adapted.folder,
            max_shard_bytes=shard_size,
            dtype=recipe.out_dtype,
            force=force,
            direct=direct_io,
        ) as writer:
            with _merge_settings(1 if device == "cpu" else None):
                entries = _stream(job, writer, policy, threads, device, progress)
            report = build_report(job, entries)
            writer.write_json(REPORT_FILE, report)
            if recipe.source is not None and recipe.source.is_file():
                (writer.tmp / RECIPE_COPY).write_bytes(recipe.source.read_bytes())
    finally:
        job.close()
    report["elapsed_s"] = round(time.perf_counter() - start, 3)  # not in the file: varies
    return report


def default_threads() -> int:
    """One worker per CPU this process may use (its affinity mask, which container and batch
    limits set), at most MAX_AUTO_THREADS."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(MAX_AUTO_THREADS, cpus or 1))


@contextmanager
def _merge_settings(n: int | None):
    """Run with torch's intra-op thread count set to `n` (None: unchanged) and Python's cyclic
    garbage collector paused, then restore both.

    The merge parallelises across tensors (`--threads` workers). Letting each worker's torch ops
    also fan out over OpenMP oversubscribes the cores: on 2 cores with another busy process a
    1-worker merge spent 84% of 122 s spinning in libgomp barriers (perf), against 14 s with
    intra-op threading off. Kernels are deterministic for any thread count, so bits do not change.
    """
    if n is None:
        yield
        return
    before, collecting = torch.get_num_threads(), gc.isenabled()
    torch.set_num_threads(n)
    gc.disable()  # the loop makes no cycles; the collector cost 4% of a 1B merge (perf)
    try:
        yield
    finally:
        torch.set_num_threads(before)
        if collecting:
            gc.enable()


def output_layout(job: MergeJob, policy: DtypePolicy) -> list[tuple[str, torch.dtype, tuple]]:
    """(name, dtype, shape) of every output tensor, in write order, from metadata alone: the
    adapted shape (a grown vocabulary keeps its new rows) and the dtype `merge_tensor` returns."""
    layout = []
    for name in job.names:
        a_dtype, shape = job.adapted.meta(name)
        b_dtype = job.base.meta(job.base_names[name])[0]
        if a_dtype.is_floating_point and b_dtype.is_floating_point:
            out = policy.resolve(b_dtype, a_dtype)[1]
        else:
            out = a_dtype
        layout.append((name, out, shape))
    return layout


def _streamable(job: MergeJob, name: str, device: str) -> bool:
    """Whether `merge.streamed` merges this tensor block by block (else whole, as before): on the
    CPU, from safetensors files, with a method that has a streamed kernel, not empty."""
    if device != "cpu" or job.plans[name].method not in blockwise.METHODS:
        return False
    files = (job.base.tensor_file(job.base_names[name]), job.adapted.tensor_file(name))
    sizes = (job.base.nbytes(job.base_names[name]), job.adapted.nbytes(name))
    return None not in files and min(sizes) > 0


def _stream(
    job: MergeJob,
    writer: PlannedWriter,
    policy: DtypePolicy,
    threads: int,
    device: str,
    progress: bool,
) -> dict[str, dict]:
    total = sum(job.adapted.nbytes(n) for n in job.names)
    entries: dict[str, dict] = {}
    pending: deque[tuple[str, int, Future]] = deque()
    bar = tqdm(
        total=total,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        desc="merge",
        disable=None if progress else True,
        dynamic_ncols=True,
    )

    buffers = BufferPool(MAX_INFLIGHT_BYTES)
    alloc = buffers.alloc if device == "cpu" else None

    def work(name: str, a: torch.Tensor, b: torch.Tensor) -> dict:
        merged, entry = merge_tensor(
            name, classify(name).kind, a, b, job.plans[name], policy, device=device, alloc=alloc
        )
        writer.add(name, merged)
        buffers.give(a, b, merged)  # written: the buffers serve the next layer's tensors
        return entry

    def work_streamed(name: str) -> dict:
        base_name = job.base_names[name]
        base = (job.base.tensor_file(base_name), base_name)
        kind, adapted = classify(name).kind, job.adapted.tensor_file(name)
        return merge_streamed(name, kind, base, adapted, job.plans[name], policy, writer)

    held = 0  # input bytes held by pending work
    queued = 0  # streamed tensors pending (their nbytes entry is -1)
    base_left = Counter(job.base.shard_of(job.base_names[n]) for n in job.names)
    adapted_left = Counter(job.adapted.shard_of(n) for n in job.names)

    def drain_one() -> None:
        nonlocal held, queued
        name, nbytes, fut = pending.popleft()
        if nbytes < 0:  # streamed: its last block writes may still be in flight
            entries[name], writes = fut.result()
            wait_written(writer, name, writes)
        else:
            entries[name] = fut.result()
        held -= max(nbytes, 0)
        queued -= nbytes < 0
        bar.update(job.adapted.nbytes(name))
        for reader, shard, left in (
            (job.base, job.base.shard_of(job.base_names[name]), base_left),
            (job.adapted, job.adapted.shard_of(name), adapted_left),
        ):
            left[shard] -= 1
            if not left[shard]:
                reader.release(shard)  # finished with this shard: close its file

    pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="merge")
    try:
        for name in job.names:
            if _streamable(job, name, device):
                pending.append((name, -1, pool.submit(work_streamed, name)))  # -1: streamed
                queued += 1
            else:
                a = job.base.read(job.base_names[name], buffers)
                b = job.adapted.read(name, buffers)
                nbytes = a.nbytes + b.nbytes
                pending.append((name, nbytes, pool.submit(work, name, a, b)))
                held += nbytes
                del a, b
            while pending and (
                len(pending) - queued > threads
                or queued > QUEUE_PER_THREAD * threads
                or held > MAX_INFLIGHT_BYTES
            ):
                drain_one()
        while pending:
            drain_one()
    finally:
        for _, _, fut in pending:
            fut.cancel()
        pool.shutdown(wait=True)
        bar.close()
    return entries


def output_dtype_name(job: MergeJob) -> str:
    """The dtype the merged checkpoint is written in (for export and messages)."""
    recipe = job.recipe
    if recipe.out_dtype is not None:
        return dtype_name(recipe.out_dtype)
    first = next(n for n in job.names if job.adapted.meta(n)[0].is_floating_point)
    return dtype_name(job.adapted.meta(first)[0])
