#!/usr/bin/env python
"""Benchmark `spear-mm merge` against the I/O floor and mergekit on a LLaMA-shaped bf16 pair.

Builds a random base checkpoint and an "adapted" copy (base + 1% relative noise), both in 500 MB
shards, then times, side by side and in turns: the I/O floor (plain safetensors: read both
checkpoints into memory, write one; safetensors returns memory-mapped views, so the floor copies
the base tensors out, else it would never read them), `spear-mm merge` and `mergekit-yaml` on the same SLERP recipe with
per-layer gradients (mergekit YAML, read by both tools). Each run is a child process; wall time
and peak RSS come from getrusage of that child. Writes a table to docs/benchmarks.md (## Merge).

    .venv/bin/python scripts/bench_merge.py                  # ~1B params, ~6 GB of disk, minutes
    .venv/bin/python scripts/bench_merge.py --size small     # ~100M params, quick check
"""

from __future__ import annotations

import argparse
import json
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
SIZES = {  # layers, hidden, intermediate, vocab
    "1b": (16, 2048, 5632, 32000),
    "small": (8, 768, 2048, 32000),
}
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
import json, sys
from pathlib import Path
from safetensors import safe_open
from safetensors.torch import save_file
base, adapted, out = map(Path, sys.argv[1:4])
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


def tensor_shapes(layers: int, hidden: int, inter: int, vocab: int) -> list[tuple[str, tuple]]:
    heads_dim = hidden  # full multi-head attention (no GQA), like LLaMA-1/TinyLlama-style
    shapes = [("model.embed_tokens.weight", (vocab, hidden))]
    for i in range(layers):
        p = f"model.layers.{i}."
        shapes += [
            (p + "self_attn.q_proj.weight", (hidden, hidden)),
            (p + "self_attn.k_proj.weight", (heads_dim, hidden)),
            (p + "self_attn.v_proj.weight", (heads_dim, hidden)),
            (p + "self_attn.o_proj.weight", (hidden, hidden)),
            (p + "mlp.gate_proj.weight", (inter, hidden)),
            (p + "mlp.up_proj.weight", (inter, hidden)),
            (p + "mlp.down_proj.weight", (hidden, inter)),
            (p + "input_layernorm.weight", (hidden,)),
            (p + "post_attention_layernorm.weight", (hidden,)),
        ]
    return shapes + [("model.norm.weight", (hidden,)), ("lm_head.weight", (vocab, hidden))]


def build_pair(work: Path, size: str) -> tuple[Path, Path, int]:
    """Write base and adapted (bf16, 500 MB shards) unless already there; returns param count."""
    from spear_mm.io.checkpoint import ShardedWriter

    layers, hidden, inter, vocab = SIZES[size]
    shapes = tensor_shapes(layers, hidden, inter, vocab)
    n_params = sum(torch.Size(s).numel() for _, s in shapes)
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": hidden,
        "intermediate_size": inter,
        "num_hidden_layers": layers,
        "num_attention_heads": hidden // 128,
        "num_key_value_heads": hidden // 128,
        "vocab_size": vocab,
        "tie_word_embeddings": False,
        "rms_norm_eps": 1e-5,
        "max_position_embeddings": 2048,
        "torch_dtype": "bfloat16",
    }
    base, adapted = work / f"base-{size}", work / f"adapted-{size}"
    if (base / "config.json").is_file() and (adapted / "config.json").is_file():
        return base, adapted, n_params
    gen = torch.Generator().manual_seed(0)
    with (
        ShardedWriter(base, max_shard_bytes="500MB", config=config, force=True) as wb,
        ShardedWriter(adapted, max_shard_bytes="500MB", config=config, force=True) as wa,
    ):
        for name, shape in shapes:
            if len(shape) == 1:
                w = 1.0 + 0.1 * torch.randn(shape, generator=gen)
            else:
                w = 0.02 * torch.randn(shape, generator=gen)
            noisy = w + 0.01 * float(w.std()) * torch.randn(shape, generator=gen)
            wb.add(name, w.to(torch.bfloat16))
            wa.add(name, noisy.to(torch.bfloat16))
            del w, noisy
    return base, adapted, n_params


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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", choices=sorted(SIZES), default="1b")
    ap.add_argument("--work", default="/tmp/spear_mm_bench", help="scratch folder (~6 GB)")
    ap.add_argument("--repeats", type=int, default=2, help="rounds of the three runs")
    ap.add_argument("--threads", type=int, default=2, help="spear-mm --threads")
    ap.add_argument("--no-mergekit", action="store_true")
    ap.add_argument("--no-write", action="store_true", help="do not update docs/benchmarks.md")
    ap.add_argument("--keep", action="store_true", help="keep the generated pair")
    args = ap.parse_args()

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    base, adapted, n_params = build_pair(work, args.size)
    print(f"pair ready ({n_params / 1e9:.2f} B params) in {time.perf_counter() - t0:.0f} s")
    recipe = write_recipe(work, base, adapted, SIZES[args.size][0])
    out = work / "out"
    runs = {
        "I/O floor (safetensors read both, write one)": [
            sys.executable,
            "-c",
            FLOOR,
            str(base),
            str(adapted),
            str(out),
        ],
        f"spear-mm merge (--threads {args.threads}, --shard-size 500MB)": [
            str(BIN / "spear-mm"),
            "merge",
            str(recipe),
            "--out",
            str(out),
            "--quiet",
            "--threads",
            str(args.threads),
            "--shard-size",
            "500MB",
        ],
    }
    if not args.no_mergekit:
        runs["mergekit-yaml (default options)"] = [
            str(BIN / "mergekit-yaml"),
            str(recipe),
            str(out),
        ]
    results: dict[str, list[dict]] = {k: [] for k in runs}
    for r in range(args.repeats):
        for label, cmd in runs.items():
            res = measure(cmd, out, work)
            results[label].append(res)
            print(f"round {r + 1}: {label}: {res['wall']:.1f} s, {res['rss_mb']:.0f} MB")
    table = render(results, n_params, args)
    print(table)
    if not args.no_write:
        update_doc(ROOT / "docs" / "benchmarks.md", table)
    if not args.keep:
        shutil.rmtree(base, ignore_errors=True)
        shutil.rmtree(adapted, ignore_errors=True)
    return 0


def render(results: dict[str, list[dict]], n_params: int, args) -> str:
    floor = statistics.median(r["wall"] for r in next(iter(results.values())))
    lines = [
        "| run | wall s (median) | runs | × floor | peak RSS MB (max) |",
        "|---|---|---|---|---|",
    ]
    for label, rs in results.items():
        walls = [r["wall"] for r in rs]
        med = statistics.median(walls)
        lines.append(
            f"| {label} | {med:.1f} | {', '.join(f'{w:.1f}' for w in walls)} | "
            f"{med / floor:.2f} | {max(r['rss_mb'] for r in rs):.0f} |"
        )
    cmd = (
        f".venv/bin/python scripts/bench_merge.py --size {args.size} --repeats {args.repeats} "
        f"--threads {args.threads}"
    )
    return (
        f"{n_params / 1e9:.2f} B-parameter LLaMA-shaped bf16 pair ({args.size}: "
        f"{SIZES[args.size]} layers/hidden/intermediate/vocab, untied, 500 MB shards), "
        f"SLERP with per-layer gradients, {os.cpu_count()} CPU cores, runs interleaved.\n"
        f"Command: `{cmd}`\n\n" + "\n".join(lines) + "\n"
    )


MARKER = "<!-- end of the table bench_merge.py writes; notes below are kept -->"


def update_doc(path: Path, table: str) -> None:
    """Replace the `## Merge` section's generated part (up to MARKER, or the whole section when
    there is no marker), leaving the notes after the marker and the other sections alone."""
    text = path.read_text() if path.is_file() else "# Benchmarks\n"
    section = "## Merge\n\n" + table + "\n" + MARKER + "\n\n"
    start = text.find("## Merge\n")
    if start < 0:
        text = text.rstrip("\n") + "\n\n" + section
    else:
        mark = text.find(MARKER, start)
        end = mark + len(MARKER) + 1 if mark >= 0 else text.find("\n## ", start + 1)
        text = text[:start] + section + ("" if end < 0 else text[end:].lstrip("\n"))
    path.write_text(text)


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    raise SystemExit(main())
