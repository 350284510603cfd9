#!/usr/bin/env python
"""Issue 18's GPU measurement, one command, under 10 minutes on one GPU (H100/H200 class):

1. `spear-mm train` on an 8B-shaped model with fewer layers (hidden 4096, MLP 14,336, 32/8 heads,
   vocabulary 128,256, untied; `--train-layers`, default 4), fp32 masters with bf16 autocast and
   gradient checkpointing as in experiment=llama31_8b_finance: tokens/s and MFU;
2. `spear-mm merge --device cuda` of an 8B-shaped bf16 pair (`--merge-layers`, default 16: the
   full 32 needs ~48 GB of disk for base + adapted + merged): seconds and GB/s read;
3. one lm-eval pass (`spear-mm eval`, the bundled offline `general_ppl` suite, `--eval-limit`
   documents) on the merged model: seconds and tokens/s.

Writes `scale_check.json` (and each step's log) under `--out` (default $OUT, else
/tmp/device_out) after every step, so a run cut short still reports what it measured. Calls
spear-mm as `python -m spear_mm.cli.main`, so the repo only needs to be on PYTHONPATH; on a lent
machine run it through `bash scripts/device_check.sh scale` (which installs the carried wheels).
`--tiny` shrinks every size (CPU, seconds): a smoke test of the script itself.

    PYTHONPATH=$PWD python3 scripts/device_scale_check.py --out $OUT
    python scripts/device_scale_check.py --tiny --out /tmp/scale_tiny

MFU counts 6·N FLOPs per token for the matrices (N without the input embedding, which is a
lookup) plus 6·L·T·h for causal attention (docs/gpu.md, "Compute"), against `--peak-tflops`
(default from the GPU's name: dense bf16 989 for H100/H200, 312 for A100). The recomputed forward
of gradient checkpointing is hardware work MFU does not count.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
FULL = {"hidden": 4096, "intermediate": 14336, "heads": 32, "kv_heads": 8, "vocab_size": 128256}
TINY = {"hidden": 64, "intermediate": 128, "heads": 4, "kv_heads": 2, "vocab_size": 272}
PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0}


def spear(*args: str, log: Path, timeout: int) -> float:
    """Run `spear-mm ARGS` (as a module); seconds; raises with the log's tail on failure."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}  # fmt: skip
    start = time.perf_counter()
    with open(log, "w") as fh:
        proc = subprocess.run([sys.executable, "-m", "spear_mm.cli.main", *args], env=env,
                              stdout=fh, stderr=subprocess.STDOUT, timeout=timeout)  # fmt: skip
    if proc.returncode:
        tail = log.read_text(errors="replace").strip().splitlines()[-5:]
        raise RuntimeError(f"spear-mm {args[0]} exited {proc.returncode}: " + " | ".join(tail))
    return time.perf_counter() - start


def flops_per_token(shape: dict, layers: int, seq_len: int) -> float:
    h, m, kv = shape["hidden"], shape["intermediate"], shape["kv_heads"]
    head = h // shape["heads"]
    per_layer = 2 * h * h + 2 * h * kv * head + 3 * h * m  # q, o; k, v; gate, up, down
    matrices = layers * per_layer + shape["vocab_size"] * h  # + lm_head (not the embedding)
    return 6.0 * matrices + 6.0 * layers * seq_len * h


def peak_tflops(arg: float | None) -> float | None:
    if arg:
        return arg
    import torch

    if not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name(0)
    return next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)


def train_step(a, shape, work: Path, out: Path) -> dict:
    from spear_mm.testing import make_tiny_llama, write_pseudo_corpus

    model = make_tiny_llama(work / "train_model", num_layers=a.train_layers, **shape,
                            tie_embeddings=False, dtype=_bf16(), seed=0)  # fmt: skip
    corpus = write_pseudo_corpus(work / "corpus.jsonl", 4000 if not a.tiny else 200, seed=1)
    run = work / "train_run"
    seconds = spear("train", f"model={model}", f"data.domain={corpus}", "data.general=null",
                    f"data.seq_len={a.seq_len}", "data.val_max_blocks=1",
                    "trainer.eval_at_start=false", f"trainer.max_steps={a.steps}",
                    f"trainer.batch_size={a.batch}", "trainer.save_every=0",
                    "trainer.progress=false", "trainer.save_dtype=bfloat16",
                    "trainer.gradient_checkpointing=true", "model.dtype=float32",
                    f"trainer.mixed_precision={'auto' if a.tiny else 'bf16'}", f"out={run}",
                    log=out / "train.log", timeout=a.step_timeout)  # fmt: skip
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    speeds = [
        r["tokens_per_s"] for r in rows if r.get("step", 0) > a.warmup and "tokens_per_s" in r
    ]
    tps = statistics.median(speeds)
    fpt = flops_per_token(shape, a.train_layers, a.seq_len)
    peak = peak_tflops(a.peak_tflops)
    return {
        "layers": a.train_layers, "seq_len": a.seq_len, "batch": a.batch, "steps": a.steps,
        "tokens_per_s_median": tps, "tokens_per_s_min": min(speeds),
        "tokens_per_s_max": max(speeds), "flops_per_token": fpt, "peak_tflops": peak,
        "mfu": tps * fpt / (peak * 1e12) if peak else None, "wall_s": round(seconds, 1),
    }  # fmt: skip


def merge_step(a, shape, work: Path, out: Path) -> dict:
    from spear_mm.testing import make_tiny_llama, perturb_checkpoint

    base = make_tiny_llama(work / "base", num_layers=a.merge_layers, **shape,
                           tie_embeddings=False, dtype=_bf16(), seed=0,
                           max_shard_bytes="5GB")  # fmt: skip
    adapted = perturb_checkpoint(base, work / "adapted", scale=0.02, seed=1)
    recipe = work / "recipe.yaml"
    recipe.write_text(f"base: {base}\nadapted: {adapted}\nmethod: lerp\ndefault: 0.5\n")
    device = "cpu" if a.tiny else "cuda"
    seconds = spear("merge", str(recipe), "--out", str(work / "merged"), "--device", device,
                    "--quiet", log=out / "merge.log", timeout=a.step_timeout)  # fmt: skip
    nbytes = sum(p.stat().st_size for p in base.glob("*.safetensors"))
    return {"layers": a.merge_layers, "device": device, "bytes_per_model": nbytes,
            "wall_s": round(seconds, 1), "read_gb_per_s": 2 * nbytes / seconds / 1e9}  # fmt: skip


def eval_step(a, work: Path, out: Path) -> dict:
    run = work / "eval_run"
    seconds = spear("eval", f"model={work / 'merged'}", "suite=general_ppl",
                    f"limit={a.eval_limit}", "use_cache=false", f"cache_dir={work / 'cache'}",
                    f"out={run}", log=out / "eval.log", timeout=a.step_timeout)  # fmt: skip
    entry = json.loads((run / "results.json").read_text())["tasks"]["spear_general_ppl"]
    return {"task": "spear_general_ppl", "limit": a.eval_limit, "wall_s": round(seconds, 1),
            "lm_eval_s": entry.get("seconds_all_tasks"), "n_samples": entry.get("n_samples"),
            "batch_size": entry.get("batch_size"),
            "max_length": entry.get("max_length")}  # fmt: skip


def _bf16():
    import torch

    return torch.bfloat16


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "/tmp/device_out")))
    ap.add_argument("--work", type=Path, default=Path("/tmp/scale_check"))
    ap.add_argument("--tiny", action="store_true", help="tiny sizes on the CPU: a smoke test")
    ap.add_argument("--train-layers", type=int, default=4)
    ap.add_argument("--merge-layers", type=int, default=16)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--warmup", type=int, default=2, help="steps left out of tokens/s")
    ap.add_argument("--seq-len", type=int, default=2048)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--eval-limit", type=int, default=20)
    ap.add_argument("--peak-tflops", type=float, help="dense bf16 peak of the GPU (MFU)")
    ap.add_argument("--step-timeout", type=int, default=300, help="seconds per step at most")
    a = ap.parse_args()
    if a.tiny:
        a.train_layers, a.merge_layers, a.steps, a.seq_len, a.batch = 2, 2, 4, 64, 2
        a.eval_limit, a.warmup = 2, 1
    shape = TINY if a.tiny else FULL
    a.out.mkdir(parents=True, exist_ok=True)
    a.work.mkdir(parents=True, exist_ok=True)
    report: dict = {
        "tiny": a.tiny,
        "shape": shape,
        "started": time.strftime("%FT%TZ", time.gmtime()),
    }
    try:
        import torch

        report["device"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    except Exception as exc:  # noqa: BLE001 - reported, not fatal
        report["device"] = f"unknown ({exc})"
    status = 0
    for name, step in (("train", lambda: train_step(a, shape, a.work, a.out)),
                       ("merge", lambda: merge_step(a, shape, a.work, a.out)),
                       ("eval", lambda: eval_step(a, a.work, a.out))):  # fmt: skip
        t0 = time.perf_counter()
        try:
            report[name] = step()
        except Exception as exc:  # noqa: BLE001 - one step failing must not hide the others
            report[name] = {"error": str(exc)[:1000]}
            status = 1
        report[name]["step_s"] = round(time.perf_counter() - t0, 1)
        print(f"{name}: {json.dumps(report[name])}", flush=True)
        (a.out / "scale_check.json").write_text(json.dumps(report, indent=2) + "\n")
    return status


if __name__ == "__main__":
    sys.exit(main())
