#!/usr/bin/env python
"""Write 1.8 GB to a new file three ways, side by side: buffered `pwrite` + `fsync`, `O_DIRECT`
`pwrite` from a page-aligned buffer + `fsync`, and a shared memory map + `msync`-free close.

Why: the merge's writes were a third of its time through the page cache (docs/benchmarks.md,
## Merge); this isolates the write path from the merge. Durability differs between the first two
and the map only in that the map is not flushed here.

    .venv/bin/python scripts/bench_writes.py [--dir /tmp/spear_mm_bench/wt] [--rounds 2]
"""

from __future__ import annotations

import argparse
import mmap
import os
import shutil
import time

import torch

CHUNK = 23 << 20  # one MLP matrix of the bench's 1B pair, in bf16
CHUNKS = 80


def _fresh(folder: str) -> str:
    shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(folder)
    os.sync()
    time.sleep(2)  # let the previous round's writeback settle
    return os.path.join(folder, "f")


def _pwrite_all(fd: int, view: memoryview, offset: int) -> None:
    done = 0
    while done < len(view):
        done += os.pwrite(fd, view[done:], offset + done)


def buffered(path: str, bufs) -> None:
    fd = os.open(path, os.O_RDWR | os.O_CREAT)
    for i in range(CHUNKS):
        _pwrite_all(fd, memoryview(bufs[i % len(bufs)].numpy()), i * CHUNK)
    os.fsync(fd)
    os.close(fd)


def direct(path: str, bufs) -> None:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_DIRECT)
    for i in range(CHUNKS):
        _pwrite_all(fd, memoryview(bufs[i % len(bufs)].numpy()), i * CHUNK)
    os.fsync(fd)
    os.close(fd)


def mapped(path: str, bufs) -> None:
    fd = os.open(path, os.O_RDWR | os.O_CREAT)
    os.ftruncate(fd, CHUNKS * CHUNK)
    for i in range(CHUNKS):
        m = mmap.mmap(fd, CHUNK, offset=i * CHUNK, flags=mmap.MAP_SHARED)
        torch.frombuffer(m, dtype=torch.uint8).copy_(bufs[i % len(bufs)])
        m.close()
    os.close(fd)


def main() -> int:
    import sys

    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from spear_mm.io.direct import page_aligned_empty

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dir", default="/tmp/spear_mm_bench/wt")
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(0)
    bufs = [page_aligned_empty(CHUNK) for _ in range(3)]
    for b in bufs:
        b.copy_(torch.randint(0, 256, (CHUNK,), dtype=torch.uint8, generator=gen))
    gb = CHUNKS * CHUNK / 1e9
    print(f"{gb:.2f} GB per run, {CHUNK >> 20} MiB chunks")
    for r in range(args.rounds):
        for label, fn in (
            ("buffered pwrite + fsync", buffered),
            ("O_DIRECT + fsync", direct),
            ("shared mmap (no flush)", mapped),
        ):
            path = _fresh(args.dir)
            t0, c0 = time.perf_counter(), os.times()
            fn(path, bufs)
            wall, c1 = time.perf_counter() - t0, os.times()
            cpu = c1.user - c0.user + c1.system - c0.system
            print(
                f"round {r + 1}: {label:26s} {wall:5.2f} s wall  {cpu:5.2f} s CPU  "
                f"{gb / wall:4.2f} GB/s",
                flush=True,
            )
    shutil.rmtree(args.dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
