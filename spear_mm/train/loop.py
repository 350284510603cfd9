"""The CPT recipe: `setup()` → `train()` → `cleanup()`, read top to bottom.

One optimizer step = `grad_accum` micro-batches per process (`accelerator.accumulate` handles
no-sync and loss scaling, DeepSpeed included). The learning-rate scheduler is not passed through
`accelerator.prepare` (that would step it once per process) but registered for checkpointing, so
it is stepped exactly once per optimizer step and saved/restored with the rest.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from spear_mm.errors import UserError
from spear_mm.train import checkpoint as ckpt
from spear_mm.train.config import TrainConfig
from spear_mm.train.data import TrainData, build_data
from spear_mm.train.freeze import apply_freeze
from spear_mm.train.metrics import MetricsLog
from spear_mm.train.optim import build_optimizer, build_scheduler
from spear_mm.train.packing import BlockStream, PackedBlocks
from spear_mm.train.runtime import load_model, make_accelerator, plan_run


class Trainer:
    """Continual pretraining of one model on one data config (see docs/train.md)."""

    def __init__(self, cfg: TrainConfig):
        self.cfg = cfg
        self.out = Path(cfg.out)
        self.start_step = 0
        self.start_tokens = 0
        self.last_checkpoint: Path | None = None
        self.acc = None

    # ------------------------------------------------------------------ setup
    def setup(self) -> None:
        cfg, tr = self.cfg, self.cfg.trainer
        if tr.num_threads:
            torch.set_num_threads(tr.num_threads)
        self.out.mkdir(parents=True, exist_ok=True)
        resume_from = self._find_resume()
        self.acc = acc = make_accelerator(cfg, self.out)
        from accelerate.utils import set_seed

        set_seed(cfg.seed)
        model, tokenizer, self.model_dir = load_model(cfg.model)
        self.data: TrainData = build_data(cfg.data, tokenizer)
        n_general = len(self.data.general) if self.data.general is not None else 0
        self.stream = BlockStream(len(self.data.domain), n_general, cfg.data.replay_ratio, cfg.seed)
        self.plan = plan_run(cfg, acc.num_processes, self.stream.positions_per_domain_epoch())
        from spear_mm.io.archmap import num_layers

        self.frozen = apply_freeze(
            model, list(tr.freeze), tr.freeze_plan, num_layers(model.config.to_dict())
        )
        if tr.gradient_checkpointing:
            model.gradient_checkpointing_enable(
                gradient_checkpointing_kwargs={"use_reentrant": False}
            )
        model.train()
        self._prepare(model)
        self.metrics = MetricsLog(self.out / "metrics.jsonl", acc.is_main_process)
        if resume_from is not None:
            acc.load_state(str(resume_from / ckpt.STATE_DIR))
            state = ckpt.read_trainer_state(resume_from)
            self.start_step, self.start_tokens = int(state["step"]), int(state["tokens"])
            self.last_checkpoint = resume_from
        self.metrics.truncate_after(self.start_step)
        if tr.report_to:
            acc.init_trackers("spear_mm_train", config=_flat_config(cfg))

    def _prepare(self, model) -> None:
        acc, tr = self.acc, self.cfg.trainer
        from accelerate.utils import DistributedType

        if acc.distributed_type == DistributedType.DEEPSPEED:
            # DeepSpeed builds its engine from model and optimizer together.
            optimizer = build_optimizer(model, tr)
            self.model, self.optimizer = acc.prepare(model, optimizer)
        else:
            # FSDP: wrap first, then build the optimizer over the wrapped (original) params.
            self.model = acc.prepare(model)
            self.optimizer = acc.prepare(build_optimizer(self.model, tr))
        self.scheduler = build_scheduler(self.optimizer, tr, self.plan.total_steps)
        acc.register_for_checkpointing(self.scheduler)

    def _find_resume(self) -> Path | None:
        resume = str(self.cfg.resume)
        found = ckpt.list_checkpoints(self.out)
        if resume == "never":
            if found or (self.out / "final").exists():
                raise UserError(
                    f"out: {self.out} already holds checkpoints and resume=never; "
                    "choose a new out or set resume=auto"
                )
            return None
        if resume == "auto":
            return found[-1][1] if found else None
        folder = Path(resume).expanduser()
        if not (folder / ckpt.STATE_FILE).is_file() or not (folder / ckpt.STATE_DIR).is_dir():
            raise UserError(
                f"resume: {folder} is not a resumable checkpoint (needs "
                f"{ckpt.STATE_FILE} and {ckpt.STATE_DIR}/); give out/checkpoints/step-N"
            )
        return folder

    # ------------------------------------------------------------------ batches
    def _blocks(self, source: int) -> PackedBlocks:
        return self.data.general if source == 1 else self.data.domain

    def _batch(self, positions: range) -> tuple[torch.Tensor, torch.Tensor]:
        ids, labels = [], []
        for p in positions:
            source, index = self.stream.locate(p)
            i, lab = self._blocks(source).batch(torch.tensor([index]))
            ids.append(i)
            labels.append(lab)
        return torch.cat(ids).to(self.acc.device), torch.cat(labels).to(self.acc.device)

    def _step_tokens(self, step: int) -> int:
        located = (self.stream.locate(p) for p in self.plan.step_positions(step))
        return sum(int(self._blocks(s).lengths[i]) for s, i in located)

    # ------------------------------------------------------------------ train
    def train(self) -> dict:
        acc, tr, plan = self.acc, self.cfg.trainer, self.plan
        if self.start_step == 0 and tr.eval_at_start:
            self.metrics.write({"step": 0, **self.evaluate()})
        tokens = self.start_tokens
        bar = tqdm(
            total=plan.total_steps,
            initial=self.start_step,
            desc="train",
            disable=not (tr.progress and acc.is_main_process),
            dynamic_ncols=True,
        )
        t0, last = time.perf_counter(), {}
        for step in range(self.start_step, plan.total_steps):
            t_step = time.perf_counter()
            lr = self.scheduler.get_last_lr()[0]  # the lr this step uses
            loss = self._optimizer_step(step)
            step_tokens = self._step_tokens(step)
            tokens += step_tokens
            done = step + 1
            tok_s = step_tokens / max(time.perf_counter() - t_step, 1e-9)
            row = {
                "step": done,
                "loss": loss,
                "lr": lr,
                "tokens": tokens,
                "tokens_per_s": round(tok_s, 1),
                "elapsed_s": round(time.perf_counter() - t0, 3),
            }
            if (tr.eval_every and done % tr.eval_every == 0) or done == plan.total_steps:
                row.update(self.evaluate())
            if done % tr.log_every == 0 or "val_loss" in row or done == plan.total_steps:
                self.metrics.write(row)
                if tr.report_to:
                    acc.log({k: v for k, v in row.items() if k != "step"}, step=done)
            bar.set_postfix(loss=f"{loss:.4f}", tok_s=f"{tok_s:.0f}")
            bar.update(1)
            last = row
            if tr.save_every and done % tr.save_every == 0 and done < plan.total_steps:
                self.save(done, tokens)
        bar.close()
        if (
            self.start_step < plan.total_steps
            and tr.save_every
            and plan.total_steps % tr.save_every == 0
        ):
            self.save(plan.total_steps, tokens)
        self._save_final(tokens)
        return last

    def _optimizer_step(self, step: int) -> float:
        """One optimizer step; returns the mean loss over its micro-batches (all processes)."""
        acc, tr = self.acc, self.cfg.trainer
        total = torch.zeros((), device=acc.device)
        for micro in range(tr.grad_accum):
            ids, labels = self._batch(self.plan.positions(step, micro, acc.process_index))
            with acc.accumulate(self.model):
                loss = self.model(input_ids=ids, labels=labels).loss
                total += loss.detach().float()
                acc.backward(loss)
        mean = float(acc.reduce(total, reduction="mean")) / tr.grad_accum
        if not math.isfinite(mean):
            where = self.last_checkpoint or "none (no checkpoint was written yet)"
            raise UserError(
                f"trainer: loss became non-finite ({mean}) at step {step + 1}; "
                f"stopped without updating; last good checkpoint: {where}; lower "
                "trainer.lr, keep trainer.max_grad_norm > 0 or check the data"
            )
        if tr.max_grad_norm:
            acc.clip_grad_norm_(self.model.parameters(), tr.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return mean

    @torch.no_grad()
    def evaluate(self) -> dict:
        """Token-weighted mean loss on each held-out stream (every process runs every block:
        forward passes are collective under FSDP, and the validation set is small)."""
        self.model.eval()
        result = {}
        bs = self.cfg.trainer.batch_size
        for name, blocks in self.data.val.items():
            total, count = 0.0, 0
            for start in range(0, len(blocks), bs):
                ids, labels = blocks.batch(torch.arange(start, min(start + bs, len(blocks))))
                out = self.model(
                    input_ids=ids.to(self.acc.device), labels=labels.to(self.acc.device)
                )
                n = int((labels[:, 1:] != -100).sum())
                total += float(out.loss) * n
                count += n
            result["val_loss" if name == "domain" else f"val_loss_{name}"] = total / max(count, 1)
        self.model.train()
        return result

    # ------------------------------------------------------------------ checkpoints
    def _trainer_state(self, step: int, tokens: int) -> dict:
        return {
            "step": step,
            "tokens": tokens,
            "total_steps": self.plan.total_steps,
            "global_batch": self.plan.global_batch,
            "seq_len": self.plan.seq_len,
            "processes": self.acc.num_processes,
            "distributed": self.acc.distributed_type.value,  # NO, MULTI_CPU, FSDP, DEEPSPEED, ...
            "source_model": str(self.model_dir),
            "frozen": self.frozen,
            "data": self.data.stats,
        }

    def save(self, step: int, tokens: int) -> None:
        target = ckpt.checkpoints_dir(self.out) / f"step-{step}"
        ckpt.save_checkpoint(
            self.acc,
            self.model,
            target,
            source_dir=self.model_dir,
            trainer_state=self._trainer_state(step, tokens),
            save_dtype=self.cfg.trainer.save_dtype,
            with_train_state=True,
        )
        self.last_checkpoint = target
        if self.acc.is_main_process:
            ckpt.prune_train_states(self.out, self.cfg.trainer.keep_train_state)

    def _save_final(self, tokens: int) -> None:
        ckpt.save_checkpoint(
            self.acc,
            self.model,
            self.out / "final",
            source_dir=self.model_dir,
            trainer_state=self._trainer_state(self.plan.total_steps, tokens),
            save_dtype=self.cfg.trainer.save_dtype,
            with_train_state=False,
        )

    def cleanup(self) -> None:
        from accelerate.state import AcceleratorState, GradientState

        if getattr(self, "acc", None) is not None and self.cfg.trainer.report_to:
            self.acc.end_training()
        # accelerate keeps process-wide singletons; clear them (not the process group) so the
        # next run in this process (a multirun job, a test) may pick another precision.
        AcceleratorState._reset_state()
        GradientState._reset_state()


def _flat_config(cfg: TrainConfig) -> dict:
    """Scalar-only flat view of the config (TensorBoard hparams accept nothing else):
    `trainer.lr`, `data.seq_len`, ... — the same keys under `spear-mm train` and `spear-mm run`,
    which both hand over a TrainConfig."""
    import dataclasses

    flat: dict = {}

    def walk(node: dict, prefix: str) -> None:
        for key, value in node.items():
            name = f"{prefix}{key}"
            if isinstance(value, dict):
                walk(value, name + ".")
            else:
                flat[name] = value if isinstance(value, (int, float, str, bool)) else str(value)

    walk(dataclasses.asdict(cfg), "")
    return flat


def run_training(cfg: TrainConfig) -> dict:
    """Train per `cfg`; returns the last metrics row."""
    trainer = Trainer(cfg)
    try:
        trainer.setup()
        return trainer.train()
    finally:
        trainer.cleanup()
