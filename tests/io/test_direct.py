"""Direct safetensors reads and the planned (write-in-place) writer."""

from __future__ import annotations

import json
import os
import random
import shutil
import struct
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from spear_mm.errors import UserError
from spear_mm.io.checkpoint import CheckpointReader
from spear_mm.io.direct import TensorFile, read_entries
from spear_mm.io.planned import PlannedWriter


def _tensors():
    gen = torch.Generator().manual_seed(0)
    return {
        "w.bf16": torch.randn(33, 17, generator=gen).to(torch.bfloat16),
        "w.f32": torch.randn(5, 3, 2, generator=gen),
        "w.f16": torch.randn(64, generator=gen).to(torch.float16),
        "ids": torch.arange(10, dtype=torch.int64),
        "mask": torch.tensor([True, False, True]),
        "empty": torch.zeros(0, 4),
        "scalar": torch.tensor(2.5),
    }


def _bits(t: torch.Tensor) -> bytes:
    return t.reshape(-1).contiguous().view(torch.uint8).numpy().tobytes() if t.numel() else b""


def test_read_matches_safetensors_bit_for_bit(tmp_path):
    tensors = _tensors()
    path = tmp_path / "m.safetensors"
    save_file(tensors, str(path))
    f = TensorFile(path)
    try:
        for name, t in tensors.items():
            got = f.read(name)
            assert got.dtype == t.dtype and got.shape == t.shape
            assert _bits(got) == _bits(t)
            got.add_(1) if got.is_floating_point() and got.numel() else None  # owned memory
        assert _bits(f.read("w.bf16")) == _bits(tensors["w.bf16"])  # the file is untouched
    finally:
        f.close()


def test_truncated_or_corrupt_header_is_a_user_error(tmp_path):
    path = tmp_path / "m.safetensors"
    save_file(_tensors(), str(path))
    raw = path.read_bytes()
    (tmp_path / "short.safetensors").write_bytes(raw[:-8])
    with pytest.raises(UserError, match="short.safetensors"):
        read_entries(tmp_path / "short.safetensors")
    (tmp_path / "bad.safetensors").write_bytes(struct.pack("<Q", 4) + b"{oops")
    with pytest.raises(UserError, match="bad.safetensors"):
        read_entries(tmp_path / "bad.safetensors")


def _layout(tensors):
    return [(n, t.dtype, tuple(t.shape)) for n, t in tensors.items()]


@pytest.mark.parametrize("shard_bytes", [10**9, 600])
def test_planned_writer_out_of_order_from_threads(tmp_path, shard_bytes):
    tensors = _tensors()
    order = list(tensors)
    random.Random(0).shuffle(order)
    with (
        PlannedWriter(
            tmp_path / "out", _layout(tensors), max_shard_bytes=shard_bytes, config={"a": 1}
        ) as w,
        ThreadPoolExecutor(3) as pool,
    ):
        list(pool.map(lambda n: w.add(n, tensors[n]), order))
    out = tmp_path / "out"
    with CheckpointReader(out) as r:
        assert sorted(r.names) == sorted(tensors)
        for name, t in tensors.items():
            assert _bits(r.get(name)) == _bits(t)  # safe_open reads our files
            assert _bits(r.read(name)) == _bits(t)
    if shard_bytes == 600:
        index = json.loads((out / "model.safetensors.index.json").read_text())
        assert len(set(index["weight_map"].values())) > 1
        assert index["metadata"]["total_size"] == sum(t.nbytes for t in tensors.values())
    else:
        with safe_open(str(out / "model.safetensors"), "pt") as f:
            assert f.metadata() == {"format": "pt"}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_planned_writer_missing_tensor_leaves_nothing(tmp_path):
    tensors = _tensors()
    with (
        pytest.raises(RuntimeError, match="never written"),
        PlannedWriter(tmp_path / "out", _layout(tensors), config={}) as w,
    ):
        w.add("w.f32", tensors["w.f32"])
    assert list(tmp_path.iterdir()) == []


def test_planned_writer_refuses_a_tensor_off_plan(tmp_path):
    tensors = _tensors()
    with (
        pytest.raises(RuntimeError, match="planned"),
        PlannedWriter(tmp_path / "out", _layout(tensors), config={}) as w,
    ):
        w.add("w.f32", tensors["w.f32"].double())
    assert list(tmp_path.iterdir()) == []


def test_planned_output_loads_with_transformers(tiny_base, tmp_path):
    from transformers import AutoModelForCausalLM

    with CheckpointReader(tiny_base) as r:
        layout = [(n, *r.meta(n)) for n in r.names]
        with PlannedWriter(tmp_path / "copy", layout, source_dir=tiny_base) as w:
            for name in reversed(r.names):
                w.add(name, r.read(name))
        ref = AutoModelForCausalLM.from_pretrained(tiny_base)
    got = AutoModelForCausalLM.from_pretrained(tmp_path / "copy")
    for (n, p), (_, q) in zip(ref.state_dict().items(), got.state_dict().items()):
        assert torch.equal(p, q), n


def test_buffer_pool_reuses_by_size_and_bounds_idle_memory():
    from spear_mm.io.direct import BufferPool

    pool = BufferPool(max_free_bytes=300)
    a = pool.alloc((10, 10), torch.float16)  # 200 bytes
    ptr = a.data_ptr()
    pool.give(a, a.view(torch.uint8))  # two views of one buffer: taken back once
    again = pool.take(200)
    assert again.data_ptr() == ptr  # reused, not a fresh allocation
    other = pool.take(100)
    pool.give(again, other)  # 300 bytes idle: at the cap
    big = pool.take(250)
    pool.give(big)  # 550 idle > 300: the oldest go first (200, then 100 bytes)
    assert pool._free_bytes == 250 and [b.numel() for b in pool._free.values()] == [250]
    foreign = torch.zeros(50, dtype=torch.uint8)
    pool.give(foreign)  # never handed out: ignored, never recycled under its owner
    assert pool.take(50).data_ptr() != foreign.data_ptr()


def test_read_into_a_pooled_buffer(tmp_path):
    from spear_mm.io.direct import BufferPool

    tensors = _tensors()
    save_file(tensors, str(tmp_path / "m.safetensors"))
    f, pool = TensorFile(tmp_path / "m.safetensors"), BufferPool(1 << 20)
    try:
        first = f.read("w.bf16", pool)
        ptr = first.data_ptr()
        pool.give(first)
        second = f.read("w.bf16", pool)
        assert second.data_ptr() == ptr and _bits(second) == _bits(tensors["w.bf16"])
    finally:
        f.close()


def _direct_tensors():
    """Tensors whose bytes are page-aligned in memory (pool buffers) or not, with sizes that are
    and are not multiples of 4 KiB, so direct writes, page-cache edges and fallbacks all occur."""
    from spear_mm.io.direct import page_aligned_empty

    gen = torch.Generator().manual_seed(1)
    out = {}
    for name, n in (("a", 3 * 4096), ("b", 5 * 4096 + 6), ("c", 2 * 4096 + 2), ("d", 3)):
        t = page_aligned_empty(2 * n).view(torch.bfloat16)
        out[name] = t.copy_(torch.randn(n, generator=gen))
    unaligned = torch.randn(4 * 4096 + 1, generator=gen).to(torch.bfloat16)
    out["e"] = unaligned[1:]  # starts 2 bytes into its storage: never page-aligned
    return out


def test_planned_writer_direct_and_buffered_give_identical_files(tmp_path):
    from spear_mm.io.direct import PAGE
    from spear_mm.io.planned import DIRECT_FS, filesystem_type

    tensors = _direct_tensors()
    folders = {}
    for direct in (True, False):
        out = tmp_path / f"direct-{direct}"
        with PlannedWriter(out, _layout(tensors), config={}, direct=direct) as w:
            for name in reversed(list(tensors)):
                w.add(name, tensors[name])
            used_direct = w.direct
        folders[direct] = out
        if direct and filesystem_type(tmp_path) in DIRECT_FS:
            assert used_direct  # O_DIRECT really wrote here (no silent fallback)
    raw = (folders[True] / "model.safetensors").read_bytes()
    assert raw == (folders[False] / "model.safetensors").read_bytes()
    (size,) = struct.unpack("<Q", raw[:8])
    assert (8 + size) % PAGE == 0  # data starts on a page: direct writes line up
    with CheckpointReader(folders[True]) as r:
        for name, t in tensors.items():
            assert _bits(r.get(name)) == _bits(t)


def test_filesystem_type_picks_direct_io_only_where_it_helps(tmp_path):
    from spear_mm.io.planned import filesystem_type

    assert filesystem_type("/proc/self") == "proc"
    shm = Path("/dev/shm")
    if filesystem_type(shm) != "tmpfs" or not os.access(shm, os.W_OK):
        pytest.skip("no writable tmpfs at /dev/shm")
    tensors = _direct_tensors()
    target = shm / f"spear-mm-test-{os.getpid()}"
    try:
        with PlannedWriter(target, _layout(tensors), config={}) as w:
            assert not w.direct  # memory file system: page cache only
            for name, t in tensors.items():
                w.add(name, t)
        with CheckpointReader(target) as r:
            assert all(_bits(r.get(n)) == _bits(t) for n, t in tensors.items())
    finally:
        shutil.rmtree(target, ignore_errors=True)
