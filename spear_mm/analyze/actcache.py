"""Activation cache for per-layer ablations of a decoder-only model.

Restoring layer i to base changes only layers i..L-1, so the hidden states entering layer i are
the adapted model's. ``record()`` stores every block's output during the adapted model's own
evaluation; ``skip_below(i)`` then turns blocks 0..i-1 into stubs — identity below i-1, and block
i-1 returns its recorded output — so an evaluation runs only blocks i..L-1 (plus the cheap
embedding lookup and the head). The evaluation must replay exactly the same forward calls in the
same order (a deterministic probe does); a shape mismatch raises instead of giving wrong numbers.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The block list of a Hugging Face decoder (``model.model.layers`` for LLaMA-style models)."""
    for path in ("model.layers", "model.model.layers", "transformer.h", "layers"):
        obj = model
        for part in path.split("."):
            obj = getattr(obj, part, None)
            if obj is None:
                break
        if isinstance(obj, nn.ModuleList):
            return obj
    raise TypeError(f"cannot find the decoder layers of {type(model).__name__}")


def _hidden(out):
    return out[0] if isinstance(out, tuple) else out


class ActivationCache:
    """Record block outputs once, then replay them to skip the unchanged lower blocks."""

    def __init__(self, model: nn.Module):
        self.layers = decoder_layers(model)
        self.outputs: list[list[torch.Tensor]] = [[] for _ in self.layers]
        self.recorded = False

    @contextmanager
    def record(self):
        """Store a detached copy of every block's output for each forward call inside."""
        self.outputs = [[] for _ in self.layers]
        handles = []
        for j, layer in enumerate(self.layers[:-1]):  # the last block's output is never replayed

            def hook(_mod, _args, out, j=j):
                self.outputs[j].append(_hidden(out).detach().clone())

            handles.append(layer.register_forward_hook(hook))
        try:
            yield self
            self.recorded = True
        finally:
            for h in handles:
                h.remove()

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for outs in self.outputs for t in outs)

    @contextmanager
    def skip_below(self, first: int):
        """Run only blocks ``first``..L-1; blocks below replay the recorded activations."""
        if first <= 0:
            yield self
            return
        if not self.recorded:
            raise RuntimeError("ActivationCache.skip_below before record()")
        calls = {"n": 0}
        feed = self.outputs[first - 1]

        def identity(hidden_states, *args, **kwargs):
            return hidden_states

        def replay(hidden_states, *args, **kwargs):
            n = calls["n"]
            if n >= len(feed) or feed[n].shape != hidden_states.shape:
                raise RuntimeError(
                    "activation cache replay does not match the recorded forward calls; "
                    "the evaluation must be deterministic (same texts, batches and order)"
                )
            calls["n"] = n + 1
            return feed[n]

        stubs = [(layer, identity) for layer in self.layers[: first - 1]]
        stubs.append((self.layers[first - 1], replay))
        for layer, fn in stubs:
            layer.forward = fn  # instance attribute shadows the class method
        try:
            yield self
        finally:
            for layer, _ in stubs:
                del layer.forward
