"""Training checkpoints: a Hugging Face model folder with the resume state inside it.

Layout of `out/checkpoints/step-N/` (and `out/final/`, which has no `train_state/`):

    config.json, model.safetensors (or shards + index), tokenizer files   ← HF format, loadable by
                                                                            AutoModelForCausalLM,
                                                                            spear-mm merge/analyze
    trainer_state.json   step, tokens seen, total steps, frozen tensors
    train_state/         accelerate's save_state: model, optimizer, scheduler, RNG states
                         (sharded per rank under FSDP/DeepSpeed)

The folder is written by `spear_mm.io.checkpoint.ShardedWriter` (temp folder, renamed into place
when complete), with `train_state/` written into the same temp folder first, so a process killed
at any moment leaves either a complete checkpoint or none. `config.json` and the tokenizer files
are copied verbatim from the source model. Tied weights are written once, under their first
name (SmolLM2: `model.embed_tokens.weight`), as Hugging Face does.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import shutil
from pathlib import Path

from spear_mm.io.checkpoint import ShardedWriter

STATE_DIR = "train_state"
STATE_FILE = "trainer_state.json"
_STEP = re.compile(r"^step-(\d+)$")


def checkpoints_dir(out: Path) -> Path:
    return out / "checkpoints"


def list_checkpoints(out: Path) -> list[tuple[int, Path]]:
    """Complete resumable checkpoints under `out`, sorted by step."""
    found = []
    root = checkpoints_dir(out)
    if root.is_dir():
        for entry in root.iterdir():
            match = _STEP.match(entry.name)
            if match and (entry / STATE_FILE).is_file() and (entry / STATE_DIR).is_dir():
                found.append((int(match.group(1)), entry))
    return sorted(found)


def read_trainer_state(folder: Path) -> dict:
    return json.loads((folder / STATE_FILE).read_text(encoding="utf-8"))


def export_names(model) -> set[str]:
    """State-dict names to write: each parameter once (tied ones under their first name)."""
    names = {n for n, _ in model.named_parameters()}  # remove_duplicate=True: first name only
    return names | {n for n, _ in model.named_buffers()}  # non-persistent ones are not in sd


def save_checkpoint(
    accelerator,
    model,
    target: Path,
    *,
    source_dir: Path,
    trainer_state: dict,
    save_dtype: str | None,
    with_train_state: bool,
) -> None:
    """Write a checkpoint folder atomically; every process must call this (collective)."""
    from accelerate.utils import broadcast_object_list

    full = accelerator.get_state_dict(model)  # gathers FSDP/ZeRO-3 shards; full dict on rank 0
    keep = export_names(accelerator.unwrap_model(model))
    writer = None
    tmp = [None]
    if accelerator.is_main_process:
        writer = ShardedWriter(target, source_dir=source_dir, dtype=save_dtype, force=True)
        tmp[0] = str(writer.tmp)
    if accelerator.num_processes > 1:
        broadcast_object_list(tmp)
    try:
        if with_train_state:
            with _quiet("accelerate"):  # "Removed shared tensor" is expected for tied weights
                accelerator.save_state(str(Path(tmp[0]) / STATE_DIR))
        if writer is not None:
            for name, tensor in full.items():  # state-dict order keeps a layer in one shard
                if name in keep:
                    writer.add(name, tensor)
            writer.write_json(STATE_FILE, trainer_state)
        accelerator.wait_for_everyone()
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    if writer is not None:
        writer.close()
    accelerator.wait_for_everyone()


@contextlib.contextmanager
def _quiet(logger_name: str):
    logger = logging.getLogger(logger_name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def prune_train_states(out: Path, keep: int) -> None:
    """Drop `train_state/` from all but the newest `keep` checkpoints (HF weights stay)."""
    for _, folder in list_checkpoints(out)[:-keep]:
        state = folder / STATE_DIR
        # Rename first so a crash mid-delete never leaves a half state that looks resumable.
        doomed = folder / f".{STATE_DIR}.deleting"
        state.rename(doomed)
        shutil.rmtree(doomed, ignore_errors=True)
