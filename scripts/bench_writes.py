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
import functools
import mmap
import os
import shutil
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from spear_mm.io.direct import page_aligned_empty  # noqa: E402
from spear_mm.io.planned import _pwrite_all  # noqa: E402

CHUNK = 23 << 20  # one MLP matrix of the bench's 1B pair, in bf16
CHUNKS = 80


def _fresh(folder: str) -> str:
    shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(folder)
    os.sync()
    time.sleep(2)  # let the previous round's writeback settle
    return os.path.join(folder, "f")


def written(path: str, bufs, flags: int = 0) -> None:
    """pwrite every chunk at its offset (with extra open `flags`, e.g. O_DIRECT), then fsync."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | flags)
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
            ("buffered pwrite + fsync", written),
            ("O_DIRECT + fsync", functools.partial(written, flags=os.O_DIRECT)),
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
