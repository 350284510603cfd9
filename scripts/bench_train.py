"""Training throughput: `spear-mm train` vs a plain Hugging Face `Trainer`, side by side.

Same model, same packed blocks, same batch, sequence length, AdamW, cosine schedule and precision;
no evaluation, no checkpoints inside the timed steps. Throughput is tokens per second of wall time
between consecutive optimizer-step ends (data fetch, forward, backward, optimizer and logging all
inside), median over the steps after `--warmup`. The two loops alternate (ours, HF, ours, HF) so
that drift of a shared machine hits both.

    .venv/bin/python scripts/bench_train.py                  # tiny model + SmolLM2-135M
    .venv/bin/python scripts/bench_train.py --models tiny    # seconds
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

CASES = {  # name: (model spec or "tiny", batch, seq_len, steps)
    "tiny": ("tiny", 8, 128, 14),
    "smollm2-135m": ("smollm2-135m", 4, 64, 8),
}


def _reset_accelerate() -> None:
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state()
    GradientState._reset_state()


def bench_ours(
    model: str, corpus: str, batch: int, seq_len: int, steps: int, out: Path, precision: str
) -> list[float]:
    from spear_mm.train.config import DataConfig, ModelConfig, TrainConfig, TrainerConfig
    from spear_mm.train.loop import run_training
    from spear_mm.train.metrics import read_metrics

    cfg = TrainConfig(
        model=ModelConfig(name=model),
        data=DataConfig(domain=corpus, general=None, seq_len=seq_len, val_max_blocks=1),
        trainer=TrainerConfig(
            max_steps=steps,
            batch_size=batch,
            lr=1e-4,
            warmup_steps=1,
            mixed_precision=precision,
            eval_at_start=False,
            progress=False,
        ),
        out=str(out),
        resume="never",
    )
    run_training(cfg)
    elapsed = [r["elapsed_s"] for r in read_metrics(out / "metrics.jsonl") if "loss" in r]
    return [b - a for a, b in zip(elapsed, elapsed[1:])]


def bench_hf(
    model: str, corpus: str, batch: int, seq_len: int, steps: int, out: Path, precision: str
) -> list[float]:
    from transformers import Trainer, TrainerCallback, TrainingArguments

    from spear_mm.train.config import DataConfig, ModelConfig
    from spear_mm.train.data import build_data
    from spear_mm.train.runtime import load_model

    net, tok, _ = load_model(ModelConfig(name=model))
    data = build_data(DataConfig(domain=corpus, general=None, seq_len=seq_len), tok)
    rows = [
        {"input_ids": ids, "labels": lab}
        for ids, lab in zip(*data.domain.batch(torch_arange(len(data.domain))))
    ]
    ends: list[float] = []

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            ends.append(time.perf_counter())

    args = TrainingArguments(
        output_dir=str(out),
        per_device_train_batch_size=batch,
        max_steps=steps,
        learning_rate=1e-4,
        lr_scheduler_type="cosine",
        warmup_steps=1,
        weight_decay=0.1,
        adam_beta2=0.95,
        max_grad_norm=1.0,
        bf16=precision == "bf16",
        use_cpu=True,
        save_strategy="no",
        report_to=[],
        logging_strategy="no",
        disable_tqdm=True,
        dataloader_num_workers=0,
        seed=0,
    )
    Trainer(model=net, args=args, train_dataset=rows, callbacks=[Clock()]).train()
    return [b - a for a, b in zip(ends, ends[1:])]


def torch_arange(n: int):
    import torch

    return torch.arange(n)


def _median_tps(durations: list[float], warmup: int, tokens_per_step: int) -> float:
    steady = durations[warmup:] or durations
    return tokens_per_step / statistics.median(steady)


def run_case(name: str, corpus: str, precision: str, warmup: int, reps: int) -> dict:
    spec, batch, seq_len, steps = CASES[name]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if spec == "tiny":
            from spear_mm.testing import make_tiny_llama

            spec = str(make_tiny_llama(tmp / "tiny", num_layers=4, hidden=256, seed=0))
        result = {"ours": [], "hf": []}
        for rep in range(reps):
            for label, fn in (("ours", bench_ours), ("hf", bench_hf)):
                durations = fn(
                    spec, corpus, batch, seq_len, steps, tmp / f"{label}{rep}", precision
                )
                _reset_accelerate()
                result[label].append(_median_tps(durations, warmup, batch * seq_len))
    ours, hf = statistics.median(result["ours"]), statistics.median(result["hf"])
    return {
        "case": name,
        "batch": batch,
        "seq_len": seq_len,
        "steps": steps,
        "precision": precision,
        "ours_tokens_per_s": round(ours, 1),
        "hf_trainer_tokens_per_s": round(hf, 1),
        "ratio": round(ours / hf, 3),
        "runs": {k: [round(x, 1) for x in v] for k, v in result.items()},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=list(CASES), choices=list(CASES))
    ap.add_argument("--corpus", default="finance_train")
    ap.add_argument("--precision", default="bf16", choices=["bf16", "no"])
    ap.add_argument("--warmup", type=int, default=2, help="steps left out of the median")
    ap.add_argument("--reps", type=int, default=2, help="alternating repetitions per loop")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    results = [
        run_case(m, args.corpus, args.precision, args.warmup, args.reps) for m in args.models
    ]
    print(
        f"{'case':<14} {'batch x seq':>11} {'spear-mm tok/s':>15} {'HF Trainer tok/s':>17} "
        f"{'ratio':>6}"
    )
    for r in results:
        print(
            f"{r['case']:<14} {r['batch']:>5} x {r['seq_len']:<4} {r['ours_tokens_per_s']:>15} "
            f"{r['hf_trainer_tokens_per_s']:>17} {r['ratio']:>6}"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
