#!/usr/bin/env python
"""Benchmark `spear-mm merge` against the I/O floor and mergekit on LLaMA-shaped bf16 pairs.

For each kernel path, builds a random base checkpoint and an "adapted" copy (base + relative
noise: 1% gives whole-tensor cosines ≈ 0.99995, above SLERP's 0.9995 threshold, so SLERP falls
back to LERP — the LERP path; 5% gives ≈ 0.9988 — the real SLERP path), then times, side by side
and in turns: the I/O floor (plain safetensors: read both checkpoints, write one; safetensors
returns memory-mapped views, so the floor copies the base tensors out, else it would never read
them), the same floor with an `fsync` of what it wrote (`spear-mm merge` makes its output
durable, so this is the floor it is held to), `spear-mm merge` and `mergekit-yaml` on the same
SLERP recipe with per-layer gradients (mergekit YAML, read by both tools). Each run is a child
process; wall time and peak RSS come from getrusage of that child. Writes one table per size to
docs/benchmarks.md (## Merge) and deletes the pairs it built (unless --keep).

The pairs are written tensor by tensor and block by block (io.planned.PlannedWriter), from a
fixed pool of random numbers: a model is never in memory, and an 8B model takes a minute or two.

    .venv/bin/python scripts/bench_merge.py                  # ~1B params, ~8 GB of disk, minutes
    .venv/bin/python scripts/bench_merge.py --size 8b        # 8B shape, ~50 GB of disk, ~30 min
    .venv/bin/python scripts/bench_merge.py --size small     # ~100M params, quick check
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
SIZES = {  # layers, hidden, intermediate, vocab, kv heads (None: as many as query heads)
    "8b": (32, 4096, 14336, 128256, 8),  # LLaMA-3.1-8B
    "1b": (16, 2048, 5632, 32000, None),
    "small": (8, 768, 2048, 32000, None),
}
SHARD = {"8b": "5GB", "1b": "500MB", "small": "500MB"}  # input and output shard size
NOISE = {"lerp": 0.01, "slerp": 0.05}  # relative noise of the adapted model: the kernel path
RECIPE = {
    "merge_method": "slerp",
    "slices": None,  # filled in
    "parameters": {
        "t": [
            {"filter": "self_attn", "value": [0.0, 0.5, 0.3, 0.7, 1.0]},
            {"filter": "mlp", "value": [1.0, 0.5, 0.7, 0.3, 0.0]},
            {"value": 0.5},
        ]
    },
    "dtype": "bfloat16",
}
FLOOR = r"""
import json, os, sys
from pathlib import Path
from safetensors import safe_open
from safetensors.torch import save_file
base, adapted, out = map(Path, sys.argv[1:4])
durable = sys.argv[4] == "1"
out.mkdir(parents=True, exist_ok=True)
def weight_map(folder):
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        return json.loads(index.read_text())["weight_map"]
    with safe_open(folder / "model.safetensors", "pt") as f:
        return {n: "model.safetensors" for n in f.keys()}
bmap, amap = weight_map(base), weight_map(adapted)
for shard in sorted(set(amap.values())):
    names = [n for n, s in amap.items() if s == shard]
    tensors = {}
    with safe_open(adapted / shard, "pt") as fa:
        for n in names:
            tensors[n] = fa.get_tensor(n)
    for bshard in sorted({bmap[n] for n in names}):
        with safe_open(base / bshard, "pt") as fb:
            for n in names:
                if bmap[n] == bshard:
                    fb.get_tensor(n).clone()  # a view of the mapping reads nothing: copy it
    save_file(tensors, str(out / shard))
    del tensors
    if durable:
        with open(out / shard, "rb") as fh:
            os.fsync(fh.fileno())
if durable:
    fd = os.open(out, os.O_RDONLY)
    os.fsync(fd)
    os.close(fd)
"""
WRAP = r"""
import json, resource, subprocess, sys, time
t0 = time.perf_counter()
proc = subprocess.run(sys.argv[2:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
wall = time.perf_counter() - t0
ru = resource.getrusage(resource.RUSAGE_CHILDREN)
json.dump({"rc": proc.returncode, "wall": wall, "rss_mb": ru.ru_maxrss / 1024,
           "cpu": ru.ru_utime + ru.ru_stime, "err": proc.stderr[-1500:]}, open(sys.argv[1], "w"))
"""


def tensor_shapes(layers, hidden, inter, vocab, kv_heads=None) -> list[tuple[str, tuple]]:
    kv_dim = hidden if kv_heads is None else kv_heads * 128  # head dim 128
    shapes = [("model.embed_tokens.weight", (vocab, hidden))]
    for i in range(layers):
        p = f"model.layers.{i}."
        shapes += [
            (p + "self_attn.q_proj.weight", (hidden, hidden)),
            (p + "self_attn.k_proj.weight", (kv_dim, hidden)),
            (p + "self_attn.v_proj.weight", (kv_dim, hidden)),
            (p + "self_attn.o_proj.weight", (hidden, hidden)),
            (p + "mlp.gate_proj.weight", (inter, hidden)),
            (p + "mlp.up_proj.weight", (inter, hidden)),
            (p + "mlp.down_proj.weight", (hidden, inter)),
            (p + "input_layernorm.weight", (hidden,)),
            (p + "post_attention_layernorm.weight", (hidden,)),
        ]
    return shapes + [("model.norm.weight", (hidden,)), ("lm_head.weight", (vocab, hidden))]


def model_config(size: str) -> dict:
    layers, hidden, inter, vocab, kv = SIZES[size]
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": hidden,
        "intermediate_size": inter,
        "num_hidden_layers": layers,
        "num_attention_heads": hidden // 128,
        "num_key_value_heads": kv or hidden // 128,
        "vocab_size": vocab,
        "tie_word_embeddings": False,
        "rms_norm_eps": 1e-5,
        "max_position_embeddings": 2048,
        "torch_dtype": "bfloat16",
    }


POOL = 1 << 25  # random numbers reused at tensor-dependent offsets: generation is not the bench
CHUNK = 1 << 24  # elements written at a time


def write_model(folder: Path, size: str, noise: float) -> None:
    """Write one model (base when noise == 0) tensor by tensor, CHUNK elements at a time."""
    from spear_mm.io.planned import PlannedWriter

    shapes = tensor_shapes(*SIZES[size])
    layout = [(n, torch.bfloat16, s) for n, s in shapes]
    gen = torch.Generator().manual_seed(0)
    pool = torch.randn(POOL + CHUNK, generator=gen)
    noise_pool = torch.randn(POOL + CHUNK, generator=gen)
    cfg = model_config(size)
    with PlannedWriter(folder, layout, max_shard_bytes=SHARD[size], config=cfg, force=True) as w:
        for i, (name, shape) in enumerate(shapes):
            n = math.prod(shape)
            for lo in range(0, n, CHUNK):
                m = min(CHUNK, n - lo)
                off = (i * 7919 + lo // CHUNK * 104729) % POOL
                x = pool[off : off + m] * (0.1 if len(shape) == 1 else 0.02)
                if len(shape) == 1:
                    x += 1.0
                if noise:
                    off2 = (i * 6007 + lo // CHUNK * 15485863) % POOL
                    x += noise_pool[off2 : off2 + m] * (noise * (0.1 if len(shape) == 1 else 0.02))
                w.write_at(name, lo * 2, x.to(torch.bfloat16))
            w.mark_written(name)


def n_params(size: str) -> int:
    return sum(math.prod(s) for _, s in tensor_shapes(*SIZES[size]))


def write_recipe(work: Path, base: Path, adapted: Path, layers: int) -> Path:
    recipe = dict(RECIPE, base_model=str(base))
    recipe["slices"] = [
        {
            "sources": [
                {"model": str(base), "layer_range": [0, layers]},
                {"model": str(adapted), "layer_range": [0, layers]},
            ]
        }
    ]
    path = work / "slerp_gradient.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


def measure(cmd: list[str], out: Path, work: Path) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    os.sync()  # the previous run's dirty pages must not be flushed on the next run's time
    result_file = work / "measure.json"
    subprocess.run(
        [sys.executable, "-c", WRAP, str(result_file), *cmd],
        check=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    res = json.loads(result_file.read_text())
    if res["rc"] != 0:
        raise SystemExit(f"{cmd[0]} failed: {res['err']}")
    shutil.rmtree(out, ignore_errors=True)
    return res


def free_gb(path: Path) -> float:
    return shutil.disk_usage(path).free / 1e9


def commands(size: str, base: Path, adapted: Path, recipe: Path, out: Path, args) -> dict:
    floor = [sys.executable, "-c", FLOOR, str(base), str(adapted), str(out)]
    runs = {
        "I/O floor (safetensors read both, write one)": [*floor, "0"],
        "I/O floor + fsync": [*floor, "1"],
        f"spear-mm merge (--threads {args.threads})": [
            str(BIN / "spear-mm"),
            "merge",
            str(recipe),
            "--out",
            str(out),
            "--quiet",
            "--threads",
            str(args.threads),
            "--shard-size",
            SHARD[size],
        ],
    }
    if not args.no_mergekit:
        runs["mergekit-yaml (default options)"] = [
            str(BIN / "mergekit-yaml"),
            str(recipe),
            str(out),
        ]
    return runs


def bench_path(size: str, path: str, work: Path, base: Path, args) -> dict[str, list[dict]]:
    """Build the adapted model for one kernel path, run every command in turns, delete it."""
    adapted = work / f"adapted-{size}-{path}"
    t0 = time.perf_counter()
    if not (adapted / "config.json").is_file():
        write_model(adapted, size, NOISE[path])
    print(f"{path}: adapted model ready in {time.perf_counter() - t0:.0f} s", flush=True)
    recipe = write_recipe(work, base, adapted, SIZES[size][0])
    out = work / "out"
    runs = commands(size, base, adapted, recipe, out, args)
    results: dict[str, list[dict]] = {k: [] for k in runs}
    try:
        _rounds(runs, results, out, work, path, args)
    finally:
        if not args.keep:
            shutil.rmtree(adapted, ignore_errors=True)
    return results


def _rounds(runs: dict, results: dict, out: Path, work: Path, path: str, args) -> None:
    for r in range(args.repeats):
        for label, cmd in runs.items():
            if label.startswith("mergekit") and r >= args.mergekit_repeats:
                continue
            res = measure(cmd, out, work)
            res["load"] = Path("/proc/loadavg").read_text().split()[0]
            results[label].append(res)
            print(
                f"{path} round {r + 1}: {label}: {res['wall']:.1f} s, {res['rss_mb']:.0f} MB, "
                f"load {res['load']}",
                flush=True,
            )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", choices=sorted(SIZES), default="1b")
    ap.add_argument("--paths", default="lerp,slerp", help="kernel paths to bench: lerp,slerp")
    ap.add_argument("--work", default="/tmp/spear_mm_bench", help="scratch folder (local disk)")
    ap.add_argument("--repeats", type=int, default=3, help="rounds of the runs")
    ap.add_argument("--mergekit-repeats", type=int, default=None, help="default: --repeats")
    ap.add_argument("--threads", type=int, default=2, help="spear-mm --threads")
    ap.add_argument("--no-mergekit", action="store_true")
    ap.add_argument("--no-write", action="store_true", help="do not update docs/benchmarks.md")
    ap.add_argument("--keep", action="store_true", help="keep the generated models")
    args = ap.parse_args()
    if args.mergekit_repeats is None:
        args.mergekit_repeats = args.repeats

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    model_gb = n_params(args.size) * 2 / 1e9
    need = 3 * model_gb * 1.05  # base, one adapted model, one output at a time
    if free_gb(work) < need:
        print(
            f"skipped: --size {args.size} needs ~{need:.0f} GB free in {work} "
            f"(base, adapted and one merged model of {model_gb:.1f} GB); "
            f"{free_gb(work):.0f} GB are free"
        )
        return 0
    base = work / f"base-{args.size}"
    t0 = time.perf_counter()
    if not (base / "config.json").is_file():
        write_model(base, args.size, 0.0)
    print(
        f"base ready ({n_params(args.size) / 1e9:.2f} B params) in "
        f"{time.perf_counter() - t0:.0f} s",
        flush=True,
    )
    results = {}
    try:
        for path in args.paths.split(","):
            results[path] = bench_path(args.size, path, work, base, args)
    finally:
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)
            shutil.rmtree(work / "out", ignore_errors=True)
    table = render(results, args)
    print(table)
    if not args.no_write:
        update_doc(ROOT / "docs" / "benchmarks.md", args.size, table)
    return 0


def render(results: dict[str, dict[str, list[dict]]], args) -> str:
    layers, hidden, inter, vocab, kv = SIZES[args.size]
    lines = [
        "| path | run | wall s (median) | runs | × floor + fsync | peak RSS MB (max) |",
        "|---|---|---|---|---|---|",
    ]
    loads = []
    for path, runs in results.items():
        floor = statistics.median(r["wall"] for r in runs["I/O floor + fsync"])
        for label, rs in runs.items():
            walls = [r["wall"] for r in rs]
            loads += [float(r["load"]) for r in rs]
            med = statistics.median(walls)
            lines.append(
                f"| {path} | {label} | {med:.1f} | {', '.join(f'{w:.1f}' for w in walls)} | "
                f"{med / floor:.2f} | {max(r['rss_mb'] for r in rs):.0f} |"
            )
    cmd = (
        f".venv/bin/python scripts/bench_merge.py --size {args.size} --paths {args.paths} "
        f"--repeats {args.repeats} --threads {args.threads} "
        + ("--no-mergekit" if args.no_mergekit else f"--mergekit-repeats {args.mergekit_repeats}")
    )
    kv_text = f", {kv} KV heads" if kv else ""
    return (
        f"### {args.size}\n\n"
        f"{n_params(args.size) / 1e9:.2f} B-parameter LLaMA-shaped bf16 pair ({layers} layers, "
        f"hidden {hidden}, MLP {inter}, vocab {vocab}{kv_text}, untied, {SHARD[args.size]} "
        f"shards), mergekit SLERP recipe with per-layer gradients; `lerp`: adapted = base + 1% "
        f"noise (SLERP falls back to LERP), `slerp`: + 5% (the SLERP path). {os.cpu_count()} "
        f"CPU cores, load average during the runs {min(loads):.1f}–{max(loads):.1f} (the "
        f"benchmark's own processes count: about 1–2 on an otherwise idle machine), runs "
        f"interleaved.\n"
        f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. "
        f"Command: `{cmd}`\n\n" + "\n".join(lines) + "\n"
    )


def update_doc(path: Path, size: str, table: str) -> None:
    """Replace this size's generated table in `## Merge` (between its markers; inserted at the
    top of the section the first time), leaving everything else alone."""
    begin = f"<!-- bench_merge.py --size {size} -->"
    end = f"<!-- end bench_merge.py --size {size} -->"
    block = f"{begin}\n{table}{end}\n"
    text = path.read_text() if path.is_file() else "# Benchmarks\n"
    if begin in text and end in text:
        i, j = text.index(begin), text.index(end) + len(end) + 1
        text = text[:i] + block + text[j:]
    elif "## Merge\n" in text:
        i = text.index("## Merge\n") + len("## Merge\n")
        text = text[:i] + "\n" + block + text[i:]
    else:
        text = text.rstrip("\n") + "\n\n## Merge\n\n" + block
    path.write_text(text)


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    raise SystemExit(main())
