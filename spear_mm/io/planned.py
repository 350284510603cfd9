"""`PlannedWriter`: write a model folder whose layout is known up front, tensor by tensor in place.

A streaming merge knows every output tensor's name, dtype and shape before it computes any of them.
So the shard headers are written first and each tensor is written at its offset (`pwrite`) as soon
as it is ready, from any thread and in any order: nothing is buffered, no serialised copy is made,
and memory holds only the tensors in flight (`ShardedWriter` holds a shard being filled and one
being written: two shards). The files are plain safetensors (io.direct says why by hand).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import torch

from spear_mm.io.checkpoint import ShardedWriter
from spear_mm.io.direct import header_bytes, nbytes_of


class PlannedWriter(ShardedWriter):
    """A `ShardedWriter` with a fixed layout: `add` writes each tensor straight to its place.

    `layout` lists (name, dtype, shape) in output order; shards are cut by the same rule as
    ShardedWriter (a new shard when the next tensor would pass `max_shard_bytes`). `add` may be
    called from several threads in any order; every name must be added exactly once, with the
    planned dtype and shape, before `close`. Same folder layout, config and aux files, same
    atomicity as ShardedWriter.
    """

    def __init__(self, out_dir, layout: list[tuple[str, torch.dtype, tuple[int, ...]]], **kwargs):
        super().__init__(out_dir, **kwargs)
        self._fds: list[int] = []
        try:
            self._plan_files(layout)
        except BaseException:
            self.abort()
            raise

    def _plan_files(self, layout) -> None:
        groups: list[list[tuple]] = [[]]
        size = 0
        for name, dtype, shape in layout:
            nbytes = nbytes_of(dtype, shape)
            if groups[-1] and size + nbytes > self.max_shard_bytes:
                groups.append([])
                size = 0
            groups[-1].append((name, dtype, tuple(shape), size, size + nbytes))
            size += nbytes
        self._where: dict[str, tuple[int, int, torch.dtype, tuple]] = {}
        for k, group in enumerate(groups):
            tmp_name = f"shard-{k:05d}.safetensors"
            head = header_bytes(group)
            fd = os.open(self.tmp / tmp_name, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
            self._fds.append(fd)
            os.pwrite(
                fd, head, 0
            )  # not pre-sized: filling a sparse ftruncate-d file was slower here
            total = group[-1][4] if group else 0
            for name, dtype, shape, lo, _hi in group:
                self._where[name] = (k, len(head) + lo, dtype, shape)
            self._shards.append((tmp_name, [g[0] for g in group], total))
        self._missing = set(self._where)
        self._lock = threading.Lock()

    def add(self, name: str, tensor: torch.Tensor) -> None:
        k, offset, dtype, shape = self._where[name]
        if tensor.dtype != dtype or tuple(tensor.shape) != shape:
            raise RuntimeError(
                f"{name}: planned {dtype} {list(shape)}, got {tensor.dtype} {list(tensor.shape)}"
            )
        data = tensor.detach().to("cpu").contiguous()
        if data.numel():
            view = memoryview(data.reshape(-1).view(torch.uint8).numpy())
            done = 0
            while done < len(view):
                done += os.pwrite(self._fds[k], view[done:], offset + done)
        with self._lock:
            self._missing.discard(name)

    def _flush(self) -> None:
        pass  # nothing is buffered

    def _close_files(self) -> None:
        for fd in self._fds:
            os.close(fd)
        self._fds = []

    def close(self) -> Path:
        if self._closed:
            return self.out_dir
        if self._missing:
            first = sorted(self._missing)[0]
            self.abort()
            raise RuntimeError(f"{len(self._missing)} planned tensors never written ({first})")
        self._close_files()
        return super().close()

    def abort(self) -> None:
        self._close_files()
        super().abort()
