"""`PlannedWriter`: write a model folder whose layout is known up front, tensor by tensor in place.

A streaming merge knows every output tensor's name, dtype and shape before it computes any of them.
So the shard headers are written first and each tensor is written at its offset (`pwrite`) as soon
as it is ready, from any thread and in any order: nothing is buffered, no serialised copy is made,
and memory holds only the tensors in flight (`ShardedWriter` holds a shard being filled and one
being written: two shards). The files are plain safetensors (io.direct says why by hand).

Direct I/O. On a local disk file system (ext4, xfs, btrfs, f2fs) the tensor bytes go to the file
with `O_DIRECT`: the device reads them straight from the caller's buffer. A buffered `pwrite` first
copies every byte into the page cache, and the folder's final `fsync` then writes it all out again;
on a 1B merge here that copy and flush took more CPU time than the SLERP itself (perf:
`copy_folio_from_iter_atomic`, docs/benchmarks.md). `O_DIRECT` needs the memory address, the file
offset and the length to be multiples of the block size, so the data section of every shard starts
on a 4 KiB boundary (the header is padded with spaces, which safetensors allows) and the
page-aligned part of each tensor is written directly, while the few bytes before and after it
(tensors whose size is not a multiple of 4 KiB, buffers that are not page-aligned) go through the
page cache. The files are the same byte for byte either way (the header is always padded).
Network and memory file systems (NFS, Lustre, tmpfs, ...) are written through the page cache, as
is everything when `direct=False`.
"""

from __future__ import annotations

import errno
import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import torch

from spear_mm.io.checkpoint import ShardedWriter
from spear_mm.io.direct import PAGE, header_bytes, nbytes_of

DIRECT_ALIGN = PAGE
DIRECT_FS = frozenset({"ext4", "ext3", "xfs", "btrfs", "f2fs"})
WRITE_THREADS = 2  # `write_at_async`'s threads: writes in flight while the callers compute


def filesystem_type(path: str | os.PathLike) -> str | None:
    """The type (e.g. "ext4") of the mounted file system holding `path`, from
    /proc/self/mountinfo; None when it cannot be told (not Linux)."""
    target = os.path.realpath(path)
    best, fstype = "", None
    try:
        with open("/proc/self/mountinfo", encoding="utf-8") as fh:
            for line in fh:
                left, _, right = line.partition(" - ")
                point = left.split()[4].replace("\\040", " ")
                inside = target == point or target.startswith(point.rstrip("/") + "/")
                if inside and len(point) >= len(best):
                    best, fstype = point, right.split()[0]
    except (OSError, IndexError):
        return None
    return fstype


def _pwrite_all(fd: int, view: memoryview, offset: int) -> None:
    done = 0
    while done < len(view):
        done += os.pwrite(fd, view[done:], offset + done)


class PlannedWriter(ShardedWriter):
    """A `ShardedWriter` with a fixed layout: `add` writes each tensor straight to its place.

    `layout` lists (name, dtype, shape) in output order; shards are cut by the same rule as
    ShardedWriter (a new shard when the next tensor would pass `max_shard_bytes`). `add` may be
    called from several threads in any order; every name must be added exactly once, with the
    planned dtype and shape, before `close`. Same folder layout, config and aux files, same
    atomicity as ShardedWriter. `direct`: None picks direct I/O by file system (module doc),
    False never uses it.
    """

    def __init__(
        self,
        out_dir,
        layout: list[tuple[str, torch.dtype, tuple[int, ...]]],
        *,
        direct: bool | None = None,
        **kwargs,
    ):
        super().__init__(out_dir, **kwargs)
        self._fds: list[int] = []
        self._direct_fds: list[int] = []
        self._io: ThreadPoolExecutor | None = None
        if direct is None:
            direct = filesystem_type(self.tmp) in DIRECT_FS
        self.direct = direct and hasattr(os, "O_DIRECT")
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
            head = header_bytes(group, align=DIRECT_ALIGN)
            path = self.tmp / tmp_name
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
            self._fds.append(fd)
            os.pwrite(fd, head, 0)  # not pre-sized: filling a sparse file was slower here
            if self.direct:
                self._direct_fds.append(self._open_direct(path))
            total = group[-1][4] if group else 0
            for name, dtype, shape, lo, _hi in group:
                self._where[name] = (k, len(head) + lo, dtype, shape)
            self._shards.append((tmp_name, [g[0] for g in group], total))
        self._missing = set(self._where)
        self._lock = threading.Lock()

    def _open_direct(self, path: Path) -> int:
        try:
            return os.open(path, os.O_WRONLY | os.O_DIRECT)
        except OSError:  # the file system refuses O_DIRECT after all: page cache only
            self.direct = False
            return -1

    def add(self, name: str, tensor: torch.Tensor) -> None:
        k, offset, dtype, shape = self._where[name]
        if tensor.dtype != dtype or tuple(tensor.shape) != shape:
            raise RuntimeError(
                f"{name}: planned {dtype} {list(shape)}, got {tensor.dtype} {list(tensor.shape)}"
            )
        self.write_at(name, 0, tensor)
        self.mark_written(name)

    def file_offset(self, name: str) -> int:
        """Where `name`'s bytes start in its shard file: a buffer whose address has the same
        remainder modulo DIRECT_ALIGN is written with direct I/O whatever the tensor's place."""
        return self._where[name][1]

    def write_at(self, name: str, start: int, data: torch.Tensor) -> None:
        """Write `data`'s bytes at byte `start` of tensor `name` (one block of a streamed tensor;
        any thread, any order). The caller marks the tensor complete with `mark_written`."""
        k, offset, dtype, shape = self._where[name]
        data = data.detach().to("cpu").contiguous()
        raw = data.reshape(-1).view(torch.uint8)
        if start < 0 or start + raw.numel() > nbytes_of(dtype, shape):
            raise RuntimeError(f"{name}: bytes [{start}, {start + raw.numel()}) outside the plan")
        if raw.numel():
            view = memoryview(raw.numpy())
            offset += start
            if not (self.direct and self._write_direct(k, raw.data_ptr(), view, offset)):
                _pwrite_all(self._fds[k], view, offset)

    def write_at_async(self, name: str, start: int, data: torch.Tensor) -> Future:
        """`write_at` on one of the writer's I/O threads, so the caller computes its next block
        while this one goes to the disk (a direct-I/O write blocks until the device has it).
        `data` must stay unchanged until the returned future is done; its `result()` raises what
        `write_at` raised. `close` and `abort` wait for every write still in flight."""
        if self._io is None:
            with self._lock:
                if self._io is None:
                    self._io = ThreadPoolExecutor(WRITE_THREADS, thread_name_prefix="write")
        return self._io.submit(self.write_at, name, start, data)

    def _drain(self) -> None:
        """Wait for the writes in flight (their errors stay with their futures)."""
        if self._io is not None:
            self._io.shutdown(wait=True)
            self._io = None

    def mark_written(self, name: str) -> None:
        with self._lock:
            self._missing.discard(name)

    def _write_direct(self, k: int, ptr: int, view: memoryview, offset: int) -> bool:
        """Write the block-aligned middle of `view` with O_DIRECT and its edges through the
        page cache; False (nothing written) when the buffer's alignment cannot match the file's."""
        head = -offset % DIRECT_ALIGN  # bytes before the first aligned file offset
        stop = (offset + len(view)) // DIRECT_ALIGN * DIRECT_ALIGN - offset
        if (ptr + head) % DIRECT_ALIGN or stop - head < DIRECT_ALIGN:
            return False
        try:
            _pwrite_all(self._direct_fds[k], view[head:stop], offset + head)
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                raise
            self.direct = False  # refused at write time (some file systems): page cache only
            return False
        _pwrite_all(self._fds[k], view[:head], offset)
        _pwrite_all(self._fds[k], view[stop:], offset + stop)
        return True

    def _flush(self) -> None:
        pass  # nothing is buffered

    def _close_files(self) -> None:
        self._drain()  # never close a file descriptor a write in flight still uses
        for fd in self._fds + self._direct_fds:
            if fd >= 0:
                os.close(fd)
        self._fds, self._direct_fds = [], []

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
