"""Data-parallel training on this machine's CPUs: 2 processes (gloo) vs 1, same global batch.

Both arms run `spear-mm train` end to end on the same model and corpus: one process with
`--threads` torch threads, and `accelerate launch` with the shipped `cpu_ddp` config (2 processes,
`--threads / 2` threads each); `--one-thread-arm` adds one process with 1 thread. Throughput is the median `tokens_per_s` over the steps after
`--warmup` (metrics.jsonl), arms interleaved (1, 2, 1, 2, ...) so a shared machine's drift hits both.

    .venv/bin/python scripts/bench_multiproc.py --reps 3 --json /tmp/bench_mp.json
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

BIN = Path(sys.executable).parent


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_arm(procs: int, model: Path, corpus: Path, out: Path, args, threads=None) -> list[float]:
    threads = threads or max(1, args.threads // procs)  # torch threads per process
    train = [f"model={model}", f"data.domain={corpus}", "data.general=null",
             f"data.seq_len={args.seq_len}", "data.val_max_blocks=1", "trainer.eval_at_start=false",
             f"trainer.max_steps={args.steps}", f"trainer.batch_size={args.batch // procs}",
             f"trainer.num_threads={threads}", "trainer.progress=false",
             "trainer.mixed_precision=no", f"out={out}"]  # fmt: skip
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": str(threads),
    }
    if procs == 1:
        cmd = [str(BIN / "spear-mm"), "train", *train]
    else:
        config = subprocess.run(
            [str(BIN / "spear-mm"), "train", "--accelerate-config", "cpu_ddp"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        cmd = [str(BIN / "accelerate"), "launch", "--config_file", config, "--num_processes",
               str(procs), "--main_process_port", str(_port()), "-m", "spear_mm.cli.main",
               "train", *train]  # fmt: skip
    subprocess.run(cmd, env=env, check=True, capture_output=True, timeout=1800)
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    return [
        r["tokens_per_s"] for r in rows if r.get("step", 0) > args.warmup and "tokens_per_s" in r
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--batch", type=int, default=8, help="global batch (blocks per step)")
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2, help="torch threads in all, per arm")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--one-thread-arm", action="store_true",
                    help="also 1 process with 1 thread: is a gain data parallelism or threads?")  # fmt: skip
    args = ap.parse_args()
    from spear_mm.testing import make_tiny_llama, write_pseudo_corpus

    arms = [(1, "1 process", None), (2, "2 processes", None)]
    if args.one_thread_arm:
        arms.append((1, "1 process, 1 thread", 1))
    results: dict[str, list[float]] = {key: [] for _, key, _ in arms}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model = make_tiny_llama(root / "m", num_layers=args.layers, hidden=args.hidden, seed=0)
        corpus = write_pseudo_corpus(root / "c.jsonl", 400, seed=1)
        for rep in range(args.reps):
            for i, (procs, key, threads) in enumerate(arms):
                speeds = run_arm(procs, model, corpus, root / f"r{rep}a{i}", args, threads)
                results[key].append(statistics.median(speeds))
                print(f"rep {rep} {key}: {results[key][-1]:.0f} tokens/s", flush=True)
    summary = {
        k: {"median": statistics.median(v), "min": min(v), "max": max(v), "runs": v}
        for k, v in results.items()
    }
    summary["settings"] = vars(args) | {"json": str(args.json), "loadavg": os.getloadavg()}
    for k in results:
        s = summary[k]
        print(f"{k:<12} median {s['median']:.0f} tokens/s (min {s['min']:.0f}, max {s['max']:.0f})")
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
