#!/usr/bin/env python
"""Time the streaming merge on the GPU against the CPU, in-process, on bench_merge's 1B pair.

For a lent GPU machine where the `spear-mm` console script does not exist (the repo is only on
PYTHONPATH) and scripts/bench_merge.py cannot be pointed at another launcher. Builds the same
LLaMA-shaped bf16 pair and the same mergekit SLERP recipe with bench_merge's own functions, then
runs `run_merge(..., device=D, threads=N)` for each requested (device, threads) in turn and
compares every later run's output with the first one's, tensor by tensor (in ulps of the output
dtype). Prints a table and writes JSON. `--size tiny` (2 layers, hidden 256) is a quick dry run.

    PYTHONPATH=$PWD python3 scripts/device_merge_timing.py --work /tmp/bench --json out.json
"""

from __future__ import annotations

import argparse
import importlib.util
import inspect
import json
import os
import shutil
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
TINY = (2, 256, 688, 1000)  # layers, hidden, intermediate, vocab: a dry run in seconds


def load_bench():
    """scripts/bench_merge.py as a module (scripts/ is not a package)."""
    spec = importlib.util.spec_from_file_location("bench_merge", ROOT / "scripts/bench_merge.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def ulp_stats(a_dir: Path, b_dir: Path) -> dict:
    """Tensor-by-tensor bf16/fp32 ulp distance between two merged folders (same names)."""
    from safetensors import safe_open

    def names(folder: Path) -> dict[str, Path]:
        out = {}
        for f in sorted(folder.glob("*.safetensors")):
            with safe_open(f, "pt") as h:
                out.update({n: f for n in h.keys()})  # noqa: SIM118 (a handle, not a dict)
        return out

    na, nb = names(a_dir), names(b_dir)
    if set(na) != set(nb):
        return {"error": f"different tensor names: {sorted(set(na) ^ set(nb))[:5]}"}
    views = {torch.bfloat16: torch.int16, torch.float16: torch.int16, torch.float32: torch.int32}
    stats = {"tensors": len(na), "bit_identical_tensors": 0, "max_ulp": 0, "differing": 0}
    for name in sorted(na):
        with safe_open(na[name], "pt") as ha, safe_open(nb[name], "pt") as hb:
            x, y = ha.get_tensor(name), hb.get_tensor(name)
        if x.dtype != y.dtype or x.shape != y.shape:
            return {"error": f"{name}: {x.dtype}{tuple(x.shape)} vs {y.dtype}{tuple(y.shape)}"}
        bits = views[x.dtype]
        mask = torch.iinfo(bits).max
        ix, iy = x.view(bits).to(torch.int64), y.view(bits).to(torch.int64)
        ox = torch.where(ix < 0, -(ix & mask), ix & mask)
        oy = torch.where(iy < 0, -(iy & mask), iy & mask)
        d = (ox - oy).abs()
        worst = int(d.max()) if d.numel() else 0
        stats["max_ulp"] = max(stats["max_ulp"], worst)
        stats["differing"] += int((d > 0).sum())
        stats["bit_identical_tensors"] += worst == 0
    return stats


def run_one(recipe, out: Path, device: str, threads: int) -> dict:
    from spear_mm.merge.executor import run_merge

    kwargs = {
        "threads": threads,
        "device": device,
        "shard_size": "500MB",
        "progress": False,
        "force": True,
    }
    accepted = inspect.signature(run_merge).parameters  # the executor's options may change
    kwargs = {k: v for k, v in kwargs.items() if k in accepted}
    shutil.rmtree(out, ignore_errors=True)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    report = run_merge(recipe, out, **kwargs)
    wall = time.perf_counter() - t0
    row = {"device": device, "threads": threads, "wall_s": round(wall, 2)}
    row["elapsed_s"] = report.get("elapsed_s")
    if device.startswith("cuda"):
        row["gpu_peak_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return row


def warm_up(device: str) -> None:
    """Pay CUDA context creation and kernel loading before the clock starts."""
    if not device.startswith("cuda"):
        return
    from spear_mm.merge import kernels

    a = torch.randn(4096, 512, device=device, dtype=torch.bfloat16)
    b = a + 0.01 * torch.randn_like(a)
    for fn in (kernels.lerp, kernels.slerp, kernels.slerp_rowwise):
        fn(a, b, 0.3, out_dtype=torch.bfloat16)
    torch.cuda.synchronize()


def parse_runs(spec: str) -> list[tuple[str, int]]:
    runs = []
    for item in spec.split(","):
        device, _, threads = item.strip().partition(":")
        runs.append((device, int(threads or 1)))
    return runs


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", default="1b", help="1b or small (scripts/bench_merge.py), or tiny")
    ap.add_argument("--work", default="/tmp/bench", help="scratch folder (~9 GB for 1b)")
    ap.add_argument(
        "--runs", default="cpu:16,cuda:16", help="device:threads list, run in this order"
    )
    ap.add_argument("--json", default=None, help="where to write the results (JSON)")
    ap.add_argument("--no-compare", action="store_true", help="skip the output comparison")
    args = ap.parse_args()

    bench = load_bench()
    bench.SIZES.setdefault("tiny", TINY)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    base, adapted, n_params = bench.build_pair(work, args.size)
    build_s = time.perf_counter() - t0
    print(f"pair ready ({n_params / 1e9:.2f} B params) in {build_s:.0f} s", flush=True)
    path = bench.write_recipe(work, base, adapted, bench.SIZES[args.size][0])
    from spear_mm.merge.recipe import load_recipe

    recipe = load_recipe(path)
    runs = parse_runs(args.runs)
    if any(d.startswith("cuda") for d, _ in runs) and not torch.cuda.is_available():
        raise SystemExit("a cuda run was asked for but torch.cuda.is_available() is False")
    rows, outputs = [], {}
    for i, (device, threads) in enumerate(runs):
        warm_up(device)
        label = f"{i}-{device.replace(':', '')}-{threads}"
        row = run_one(recipe, work / f"out-{label}", device, threads)
        rows.append(row)
        outputs[label] = work / f"out-{label}"
        print(f"{device} threads={threads}: {row['wall_s']:.1f} s", flush=True)
    result = {
        "size": args.size,
        "params": n_params,
        "build_s": round(build_s, 1),
        "cpu_count": os.cpu_count(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "torch": torch.__version__,
        "runs": rows,
    }
    labels = list(outputs)
    if not args.no_compare and len(labels) > 1:
        result["vs_first"] = {}
        for label in labels[1:]:
            stats = ulp_stats(outputs[labels[0]], outputs[label])
            result["vs_first"][f"{labels[0]} vs {label}"] = stats
            print(f"output {labels[0]} vs {label}: {stats}", flush=True)
    for out in outputs.values():
        shutil.rmtree(out, ignore_errors=True)
    print("| device | threads | wall s | GPU peak MiB |\n|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['device']} | {r['threads']} | {r['wall_s']:.1f} | {r.get('gpu_peak_mib', '')} |"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
