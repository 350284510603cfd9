"""Stream a (base, adapted) checkpoint pair once and compute per-tensor signals.

Only one tensor pair is alive at a time: the adapted checkpoint is walked shard by shard and each
base tensor is fetched by name, so memory stays at about two tensors plus SVD work space — never
two models. Tied embeddings: when either side stores no separate ``lm_head.weight`` (or the config
ties them), the lm_head is the embedding; it is analysed once, as ``embed``, and recorded as tied.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, fields

import torch

from spear_mm.analyze.signals import tensor_signals
from spear_mm.errors import UserError
from spear_mm.io.archmap import classify, is_tied, num_layers
from spear_mm.io.checkpoint import CheckpointReader


@dataclass
class TensorRecord:
    """Signals of one tensor pair, with its place in the model."""

    name: str
    layer: int | None
    kind: str
    group: str
    shape: list[int]
    signals: dict[str, float]

    def to_json(self) -> dict:
        """The place fields in declaration order, then the signals flattened beside them."""
        place = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "signals"}
        return {**place, **self.signals}


def resolve_device(device: str) -> torch.device:
    """``auto`` → the GPU when there is one, else the CPU; anything else as given."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def check_pair(base: CheckpointReader, adapted: CheckpointReader) -> tuple[int, bool]:
    """Validate that the two checkpoints are the same architecture; return (layers, tied)."""
    try:
        n_layers = num_layers(adapted.config)
    except KeyError:
        raise UserError(
            f"config.json in {adapted.folder}: no num_hidden_layers; is it a decoder LLM folder?"
        ) from None
    if num_layers(base.config) != n_layers:
        raise UserError(
            f"layers in {base.folder} and {adapted.folder}: {num_layers(base.config)} vs "
            f"{n_layers}; analyze needs a base and its own continued-pretraining checkpoint"
        )
    tied = is_tied(base.config, base.names) or is_tied(adapted.config, adapted.names)
    return n_layers, tied


def iter_pairs(
    base: CheckpointReader, adapted: CheckpointReader, tied: bool
) -> Iterator[tuple[str, torch.Tensor, torch.Tensor]]:
    """Yield (name, base tensor, adapted tensor) one pair at a time, in adapted shard order.

    Tensors only one side has are an error, except ``lm_head.weight`` under tied embeddings (it is
    the embedding). Shape mismatches (e.g. a grown vocabulary) are an error naming the tensor.
    """
    for shard in adapted.shards:
        for name in adapted.names_in(shard):
            if tied and classify(name).kind == "lm_head":
                continue
            if name not in base:
                raise UserError(
                    f"tensor {name} of {adapted.folder} is missing from base {base.folder}; "
                    "pass the checkpoint the adapted model was trained from"
                )
            a, b = adapted.get(name), base.get(name)
            if a.shape != b.shape:
                raise UserError(
                    f"tensor {name}: shape {tuple(b.shape)} in base vs {tuple(a.shape)} in "
                    "adapted; vocabulary or width changes are not supported by analyze"
                )
            yield name, b, a
    missing = [n for n in base.names if n not in adapted and not (tied and "lm_head" in n)]
    if missing:
        raise UserError(
            f"tensor {missing[0]} of base {base.folder} is missing from {adapted.folder} "
            f"({len(missing)} missing); pass a full adapted checkpoint"
        )


def stream_signals(
    base: CheckpointReader,
    adapted: CheckpointReader,
    *,
    top_k: int = 16,
    svd_mode: str = "exact",
    device: str = "auto",
) -> tuple[list[TensorRecord], dict]:
    """Compute every per-tensor signal in one pass; return the records and a small summary."""
    n_layers, tied = check_pair(base, adapted)
    dev = resolve_device(device)
    records: list[TensorRecord] = []
    t0 = time.perf_counter()
    for name, b, a in iter_pairs(base, adapted, tied):
        info = classify(name)
        sig = tensor_signals(b.to(dev), a.to(dev), top_k=top_k, mode=svd_mode)
        records.append(TensorRecord(name, info.layer, info.kind, info.group, list(b.shape), sig))
        del b, a  # drop the pair before reading the next one
    summary = {
        "num_layers": n_layers,
        "tied_embeddings": tied,
        "num_tensors": len(records),
        "device": str(dev),
        "svd_mode": svd_mode,
        "top_k": top_k,
        "seconds": time.perf_counter() - t0,
    }
    return records, summary
