"""Ground truth by ablation: restore layers to base inside the adapted model and re-measure.

One model lives in memory (the adapted one). Restoring copies a layer's base tensors, read from the
base checkpoint, into the live parameters; undoing copies the adapted tensors back from the adapted
checkpoint — so no second model and no saved copies are ever held. With the activation cache
(``actcache``) an evaluation with layers ≥ i restored only runs blocks i..L-1, giving identical
numbers (tested) for about half the block compute.

Scores are bits per byte (lower is better) per probe name, e.g. ``{"general": .., "finance": ..}``.
Per layer i: ``harm[p][i] = bpb_p(adapted) − bpb_p(adapted with layer i restored)``; for the
general probe > 0 means the layer's CPT change costs general ability, for the domain probe < 0
means restoring the layer loses domain gain.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from contextlib import contextmanager, nullcontext

import torch
from torch import nn

from spear_mm.analyze.actcache import ActivationCache
from spear_mm.errors import UserError
from spear_mm.io.archmap import classify
from spear_mm.io.checkpoint import CheckpointReader

Measure = Callable[[nn.Module], dict[str, float]]


class LayerRestorer:
    """Copy base (or adapted) tensors of chosen layers into a live model, by checkpoint name.

    Layer ``None`` stands for the tensors outside the blocks (embeddings, final norm, lm_head).
    Tied weights are one parameter: the embedding copy also sets a tied lm_head.
    """

    def __init__(self, model: nn.Module, base: CheckpointReader, adapted: CheckpointReader):
        self.params = dict(model.named_parameters())
        self.base, self.adapted = base, adapted
        self.by_layer: dict[int | None, list[str]] = {}
        for name in adapted.names:
            if name in self.params:
                self.by_layer.setdefault(classify(name).layer, []).append(name)
        if not self.by_layer:
            raise UserError(
                f"no tensor of {adapted.folder} matches a parameter of the loaded model; "
                "analyze needs a Hugging Face causal LM folder"
            )

    def names(self, layers: Iterable[int | None]) -> list[str]:
        return [n for i in layers for n in self.by_layer.get(i, [])]

    @torch.no_grad()
    def load(self, names: list[str], reader: CheckpointReader) -> None:
        for name in names:
            p = self.params[name]
            p.copy_(reader.get(name).to(device=p.device, dtype=p.dtype))

    @contextmanager
    def restored(self, layers: Iterable[int | None]):
        """Inside the block the given layers hold base weights; adapted ones come back after."""
        names = self.names(layers)
        self.load(names, self.base)
        try:
            yield
        finally:
            self.load(names, self.adapted)


class Ablation:
    """Per-layer restore ablation of one adapted model, with an optional activation cache."""

    def __init__(
        self,
        model: nn.Module,
        restorer: LayerRestorer,
        measure: Measure,
        n_layers: int,
        *,
        use_cache: bool = True,
        log: Callable[[str], None] = lambda s: None,
    ):
        self.model, self.restorer, self.measure = model, restorer, measure
        self.n_layers = n_layers
        self.cache = ActivationCache(model) if use_cache else None
        self.log = log
        self.result: dict = {}

    def measure_set(self, layers: list[int]) -> dict[str, float]:
        """Scores with ``layers`` restored jointly (blocks below the lowest one replayed)."""
        first = min(layers) if layers else 0
        skip = self.cache.skip_below(first) if self.cache else nullcontext()
        with self.restorer.restored(layers), skip:
            return self.measure(self.model)

    def run(self) -> dict:
        """Adapted, base and every single-layer restore; fills and returns ``self.result``."""
        t0 = time.perf_counter()
        with self.cache.record() if self.cache else nullcontext():
            adapted = self.measure(self.model)
        with self.restorer.restored([None, *range(self.n_layers)]):
            base = self.measure(self.model)
        per_layer = []
        for i in range(self.n_layers):
            per_layer.append(self.measure_set([i]))
            self.log(f"ablation layer {i}/{self.n_layers}: {per_layer[-1]}")
        self.result = {
            "adapted": adapted,
            "base": base,
            "per_layer": per_layer,
            "harm": {n: [adapted[n] - s[n] for s in per_layer] for n in sorted(adapted)},
            "selections": {},
            "activation_cache": self.cache is not None,
            "cache_bytes": self.cache.nbytes() if self.cache else 0,
            "seconds": time.perf_counter() - t0,
        }
        return self.result

    def run_selections(self, selections: dict[str, list[int]]) -> dict:
        """Measure each labelled joint restore (label ``"<method>@<k>"``) after ``run``."""
        t0 = time.perf_counter()
        for label, layers in selections.items():
            scores = self.measure_set(sorted(layers))
            self.result["selections"][label] = {"layers": sorted(layers), "scores": scores}
            self.log(f"selection {label} {sorted(layers)}: {scores}")
        self.result["selection_seconds"] = time.perf_counter() - t0
        return self.result["selections"]


def selection_quality(abl: dict, k: int, probe_gen: str, probe_dom: str) -> dict:
    """Forgetting recovered and domain gain kept by each ``<method>@k`` selection (fractions).

    recovered = (bpb_gen(adapted) − bpb_gen(sel)) / (bpb_gen(adapted) − bpb_gen(base));
    gain_kept = (bpb_dom(base) − bpb_dom(sel)) / (bpb_dom(base) − bpb_dom(adapted)).
    ``ratio_vs_ablation`` divides each method's recovery by the ablation pick's recovery.
    Zero forgetting or zero gain give 0 instead of a division error.
    """
    forget = abl["adapted"][probe_gen] - abl["base"][probe_gen]
    gain = abl["base"][probe_dom] - abl["adapted"][probe_dom]
    out = {}
    for label, entry in abl["selections"].items():
        method, _, kk = label.partition("@")
        if kk != str(k):
            continue
        s = entry["scores"]
        rec = (abl["adapted"][probe_gen] - s[probe_gen]) / forget if forget else 0.0
        kept = (abl["base"][probe_dom] - s[probe_dom]) / gain if gain else 0.0
        out[method] = {"layers": entry["layers"], "recovered": rec, "gain_kept": kept}
    ref = out.get("ablation", {}).get("recovered")
    for v in out.values():
        v["ratio_vs_ablation"] = v["recovered"] / ref if ref else None
    return out
