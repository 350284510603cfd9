"""In-memory evaluation: one model load, each point merged in place and scored.

`SweepSession` holds the adapted model, its tokenizer and both weight sets once (through
`spear_mm.merge.inmemory.InMemoryMerger`); `evaluate(recipe)` merges the recipe into the live
parameters (the same per-tensor code as `spear-mm merge`) and scores the fast probes — no
checkpoint is written per point. Merge and evaluation are timed separately so the report can show
that merging costs a small fraction of a point.

Raw scores: ``general_bpb`` and ``finance_bpb`` (bits-per-byte, lower is better), plus
``suite:<task>`` for every task of an lm-eval suite when one is asked for (slow; its direction is
kept in `higher_is_better`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch

from spear_mm.eval.config import PROBE_NAMES
from spear_mm.eval.probe import Probe
from spear_mm.merge.inmemory import InMemoryMerger
from spear_mm.merge.recipe import Recipe

ROLE = "selection"  # the sweep, the solver and the verdict choose: they read selection text


def make_probes(settings, role: str = ROLE) -> dict[str, Probe]:
    """The two fixed probes with the sweep's token budget (windows are cached per tokenizer),
    on the `role` documents of the held-out corpora (spear_mm.io.roles)."""
    return {
        name: Probe.named(
            name,
            role=role,
            heldout=getattr(settings, "heldout", None),
            max_tokens=int(settings.max_tokens),
            seq_len=int(settings.seq_len),
            batch_size=int(settings.batch_size),
            autocast_bf16=settings.autocast_bf16,
            doc_max_tokens=getattr(settings, "doc_max_tokens", None),
        )
        for name in PROBE_NAMES
    }


@dataclass
class Scorer:
    """Scores a live model: the probes, then the lm-eval tasks of the selected suites if any."""

    probes: dict[str, Probe]
    tasks: list[str] = field(default_factory=list)
    limit: int | float | None = None
    higher_is_better: dict[str, bool] = field(default_factory=dict)
    backend: Any = None  # eval.backends.LmEvalBackend of the suite passes (None: in memory)
    # Per-document NLL of the last call (probe → list), and each probe's document ids / bytes /
    # tokens (the same at every point): what the sweep's intervals are bootstrapped from.
    last_docs: dict[str, list[float]] = field(default_factory=dict)
    doc_meta: dict[str, dict] = field(default_factory=dict)

    def __call__(self, model: torch.nn.Module, tokenizer) -> dict[str, float]:
        raw = {}
        for name, probe in self.probes.items():
            res = probe.score(model, tokenizer)
            raw[f"{name}_bpb"] = res.bpb
            self.last_docs[name] = list(res.docs.nll)
            self.doc_meta[name] = probe.documents(tokenizer)
        if self.tasks:
            raw.update(self._suite(model, tokenizer))
        return raw

    def _suite(self, model, tokenizer) -> dict[str, float]:
        from spear_mm.eval import harness

        result = harness.evaluate(
            model,
            self.tasks,
            tokenizer=tokenizer,
            limit=self.limit,
            progress=False,
            backend=self.backend,
        )
        out = {}
        for task, entry in result["tasks"].items():
            if entry.get("score") is not None:
                out[f"suite:{task}"] = float(entry["score"])
                self.higher_is_better[f"suite:{task}"] = bool(entry.get("higher_is_better", True))
        return out


def checked_backend(cfg, tasks: list[str]):
    """The sweep's lm-eval backend; one-line error now when it cannot run here (only when a
    suite is scored at all)."""
    backend = getattr(cfg, "lm_eval", None)
    if tasks and backend is not None and backend.mode != "hf":
        from spear_mm.eval.backends import check_runnable

        check_runnable(backend)
    return backend


def sweep_device(cfg) -> str:
    """`device`: cpu | cuda | cuda:N | auto (GPU `worker % count` when CUDA is present, else
    the CPU); a GPU this machine does not have is a one-line error."""
    from spear_mm.errors import UserError

    device = str(getattr(cfg, "device", "cpu"))
    count = torch.cuda.device_count()
    if device == "auto":
        return f"cuda:{(cfg.worker or 0) % count}" if count else "cpu"
    if device == "cpu":
        return device
    index = device.partition(":")[2]
    if not device.startswith("cuda") or (index and not index.isdigit()):
        raise UserError(f"sweep device={device!r}: choose cpu, cuda, cuda:N or auto")
    if count == 0 or (index and int(index) >= count):
        raise UserError(
            f"sweep device={device}: this machine has {count} GPU(s); use device=cpu or auto"
        )
    return device


def suite_tasks(suites) -> list[str]:
    """Task names of the selected suites (config `suite` group), in order, without repeats."""
    tasks: list[str] = []
    for suite in suites.values():
        tasks += [t for t in suite.tasks if t not in tasks]
    return tasks


class SweepSession:
    """The adapted model held once; every sweep point is merged into it in place."""

    def __init__(self, merger: InMemoryMerger, tokenizer, scorer: Scorer):
        self.merger = merger
        self.tokenizer = tokenizer
        self.scorer = scorer

    @classmethod
    def open(cls, base_dir, adapted_dir, scorer: Scorer, dtype: torch.dtype = torch.float32):
        from transformers import AutoTokenizer

        merger = InMemoryMerger.from_pretrained(base_dir, adapted_dir, dtype=dtype)
        tokenizer = AutoTokenizer.from_pretrained(adapted_dir)
        session = cls(merger, tokenizer, scorer)
        session.warm_up()
        return session

    def to(self, device: str) -> None:
        """Hold the live model on `device` (the parameters stay the same objects, so the merger
        keeps writing into them; the base and adapted weights stay in host memory)."""
        if device != "cpu":
            self.merger.model.to(device)

    @property
    def model(self) -> torch.nn.Module:
        return self.merger.model

    @property
    def num_layers(self) -> int:
        return self.merger.num_layers

    def warm_up(self) -> float:
        """Read every held tensor once, so the first points' merge times are not disk reads."""
        start = time.perf_counter()
        with torch.no_grad():
            for state in (self.merger.base_state, self.merger.adapted_state):
                for tensor in state.values():
                    tensor.sum()
        return time.perf_counter() - start

    def merge(self, recipe: Recipe) -> None:
        """Merge `recipe` into the live model.

        A recipe whose plan depends only on the layer (what the sweep writes: one t per layer,
        one for the tensors outside the blocks, one method, no dtype) goes through the merger's
        per-layer fast path without cosine statistics — the same kernels and plans, bit for bit,
        about 40% less time. Anything else goes through `apply(recipe)`.
        """
        form = layer_form(recipe, self.merger.names, self.num_layers)
        if form is None:
            self.merger.apply(recipe)
        else:
            layer_t, other_t, method = form
            self.merger.apply_layer_t(layer_t, other_t=other_t, method=method, stats=False)

    def evaluate(self, recipe: Recipe) -> tuple[dict[str, float], float, float]:
        """(raw scores, merge seconds, eval seconds) of `recipe` merged into the live model."""
        start = time.perf_counter()
        self.merge(recipe)
        merged = time.perf_counter()
        raw = self.scorer(self.model, self.tokenizer)
        return raw, merged - start, time.perf_counter() - merged


def layer_form(recipe: Recipe, names: list[str], num_layers: int):
    """(layer_t, other_t, method) when `recipe`'s plan is one t per layer + one elsewhere, else
    None (any rule by kind or name, mixed methods, a dtype, mergekit weights, method parameters)."""
    from spear_mm.io.archmap import classify

    if recipe.out_dtype is not None or recipe.compute_dtype is not None:
        return None
    plan = recipe.plan(names, num_layers)
    layer_t: list[float | None] = [None] * num_layers
    other: set[float] = set()
    methods = {p.method for p in plan.values()}
    if len(methods) != 1 or any(p.weights is not None or p.params for p in plan.values()):
        return None
    for name, p in plan.items():
        layer = classify(name).layer
        if layer is None:
            other.add(p.t)
        elif layer_t[layer] is None:
            layer_t[layer] = p.t
        elif layer_t[layer] != p.t:
            return None
    if len(other) > 1 or any(t is None for t in layer_t):
        return None
    return layer_t, (other.pop() if other else 1.0), methods.pop()


def score_folder(folder, scorer: Scorer, dtype: torch.dtype = torch.float32):
    """(raw scores, eval seconds) of a model folder (the replay baseline); freed afterwards."""
    from spear_mm.io.sources import load_model

    model, tokenizer = load_model(folder, dtype=dtype)
    start = time.perf_counter()
    raw = scorer(model, tokenizer)
    seconds = time.perf_counter() - start
    del model
    return raw, seconds
