"""The ``learned`` family: a handful of restore coefficients fitted by gradient on calibration text.

Parameters θ (`n_params(knots)` = 3·knots + 2, at most ~64): for each in-block kind group
(attention, MLP, norms) `knots` logits at evenly spaced depths, linearly interpolated to every
layer (a smooth function of depth, LiNeS-like but free in shape); one logit for the embeddings /
lm_head and any tensor outside the groups (the recipe's `default`), one for the final norm. The
restore is r = sigmoid(logit) ∈ (0, 1) and a tensor's merged value base + (1 − r)·(adapted − base):
the same LERP a native recipe with per-kind rules writes (`Schedule.kind_restore`), so the fitted
point is written and scored like any other sweep point.

Objective at knob a (a = 0 the adapted model, a = 1 the base): the general budget β = 1 − a is the
share of plain CPT's general forgetting that may remain,

    minimise  D(θ) + μ · max(0, G(θ) − G*),   G* = G_base + β · (G_adapted − G_base),

with D and G the mean NLL per scored token of the domain and general **calibration-role** windows
(the sweep's probe settings; never selection or test text) and G_base, G_adapted measured once
per window. μ (`penalty`) is an exact penalty: above the marginal rate at which domain NLL trades
for general NLL, the minimiser meets the budget. Adam on θ over minibatches of windows in a
seeded order, starting at the uniform point r = a, so a fit can only move away from uniform where
the calibration text says it helps.

The model is evaluated with `torch.func.functional_call` on parameters built from the held base
and adapted weights: nothing but the two weight sets, the model and the activations is held, and
the live model's parameters are never written. Why by hand: no library fits merge coefficients
of two checkpoints under a constraint (AdaMerging's code fits entropy on test inputs, mergekit has
no learned schedules); the optimiser and autograd are torch's.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import torch

from spear_mm.errors import UserError
from spear_mm.io.archmap import classify
from spear_mm.sweep.config import LearnSettings
from spear_mm.sweep.schedule import KIND_GROUPS, Schedule, make_schedule

BLOCK_GROUPS = KIND_GROUPS[:3]  # attention, mlp, norm: shaped in depth
EMBED, FINAL_NORM = "embeddings", "norm_final"


def n_params(knots: int) -> int:
    return 3 * knots + 2


def _logit(r: float) -> float:
    r = min(max(r, 1e-4), 1 - 1e-4)
    return math.log(r / (1 - r))


def initial_theta(knob: float, knots: int) -> torch.Tensor:
    """θ of the uniform point r = knob (every logit the same)."""
    return torch.full((n_params(knots),), _logit(knob), dtype=torch.float64)


def depth_weights(num_layers: int, knots: int) -> torch.Tensor:
    """(num_layers, knots) linear-interpolation weights of each layer between the knots."""
    w = torch.zeros((num_layers, knots), dtype=torch.float64)
    for i in range(num_layers):
        p = (i / max(num_layers - 1, 1)) * (knots - 1)
        lo = min(int(math.floor(p)), knots - 1)
        hi = min(lo + 1, knots - 1)
        frac = p - lo
        w[i, lo] += 1 - frac
        w[i, hi] += frac
    return w


def restores(theta: torch.Tensor, num_layers: int, knots: int) -> dict[str, torch.Tensor]:
    """{attention, mlp, norm: r per layer (L,); embeddings, norm_final: r ()} (differentiable)."""
    w = depth_weights(num_layers, knots).to(theta.dtype)
    out = {
        g: torch.sigmoid(w @ theta[k * knots : (k + 1) * knots]) for k, g in enumerate(BLOCK_GROUPS)
    }
    out[EMBED] = torch.sigmoid(theta[3 * knots])
    out[FINAL_NORM] = torch.sigmoid(theta[3 * knots + 1])
    return out


def tensor_slot(name: str) -> tuple[str, int | None]:
    """Which restore a tensor takes: (group, layer) for in-block attention / MLP / norm tensors,
    (norm_final, None) for the final norm, (embeddings, None) for everything else — exactly
    what the recipe's kind rules and `default` give it (sweep/recipes.py)."""
    info = classify(name)
    if info.layer is not None and info.group in BLOCK_GROUPS:
        return info.group, info.layer
    if info.kind == FINAL_NORM:
        return FINAL_NORM, None
    return EMBED, None


def tensor_restore(curves: Mapping[str, torch.Tensor], name: str) -> torch.Tensor:
    group, layer = tensor_slot(name)
    return curves[group] if layer is None else curves[group][layer]


def to_schedule(theta: torch.Tensor, knob: float, num_layers: int, knots: int) -> Schedule:
    """The fitted θ as a sweep point (kind rules per layer, final norm, default)."""
    with torch.no_grad():
        curves = {k: v.double() for k, v in restores(theta, num_layers, knots).items()}
    groups = tuple((g, tuple(float(x) for x in curves[g])) for g in BLOCK_GROUPS)
    layer = tuple(sum(r[i] for _, r in groups) / 3 for i in range(num_layers))
    return Schedule(
        "learned",
        float(knob),
        layer,
        float(curves[EMBED]),
        kind_restore=groups,
        final_norm_restore=float(curves[FINAL_NORM]),
    )


# An objective maps (step, merged parameters) to (domain loss, general loss over the budget):
# both scalars; the fit minimises domain + penalty · relu(excess).
Objective = Callable[[int, dict[str, torch.Tensor]], tuple[torch.Tensor, torch.Tensor]]


@dataclass
class FitResult:
    theta: torch.Tensor
    trace: list[dict] = field(default_factory=list)  # per step: domain, excess, objective


def fit(
    objective: Objective,
    base: Mapping[str, torch.Tensor],
    adapted: Mapping[str, torch.Tensor],
    num_layers: int,
    knob: float,
    settings: LearnSettings,
    progress: bool = False,
) -> FitResult:
    """Adam on θ from the uniform point at `knob`; `base` / `adapted` map each parameter name to
    its two weight sets (same shapes). Deterministic for the same inputs."""
    from tqdm.auto import tqdm

    for name in adapted:
        if tuple(base[name].shape) != tuple(adapted[name].shape):
            raise UserError(
                f"learned family: tensor {name} has shape {list(base[name].shape)} in the base "
                f"and {list(adapted[name].shape)} in the adapted model; it needs equal shapes"
            )
    theta = initial_theta(knob, settings.knots).requires_grad_(True)
    opt = torch.optim.Adam([theta], lr=settings.lr)
    trace = []
    bar = tqdm(range(settings.steps), desc=f"learned@{knob:.3g}", disable=not progress)
    for step in bar:
        curves = restores(theta, num_layers, settings.knots)
        params = {}
        for name, a in adapted.items():
            b = base[name]
            t = (1 - tensor_restore(curves, name)).to(b.dtype)
            params[name] = torch.lerp(b, a, t)
        domain, excess = objective(step, params)
        loss = domain + settings.penalty * torch.relu(excess)
        opt.zero_grad()
        loss.backward()
        opt.step()
        row = {"step": step, "domain": domain.item(), "excess": excess.item()}
        row["objective"] = loss.item()
        trace.append(row)
        bar.set_postfix(objective=f"{row['objective']:.4f}", excess=f"{row['excess']:+.4f}")
    return FitResult(theta.detach(), trace)


def _nll_rows(logits: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(summed NLL, scored tokens) per row."""
    vocab = logits.shape[-1]
    nll = torch.nn.functional.cross_entropy(
        logits.float().reshape(-1, vocab), y.reshape(-1), ignore_index=-100, reduction="none"
    ).view(y.shape)
    return nll.sum(dim=1), (y != -100).sum(dim=1)


def window_nll(model, windows, rows: Sequence[int], params=None, autocast=False):
    """(NLL per row, tokens per row) of `rows` of `windows`; with `params`, through
    `functional_call` (differentiable in them), else under no_grad with the live weights."""
    import contextlib

    from torch.func import functional_call

    from spear_mm.eval.probe import window_batch

    device = next(model.parameters()).device
    x, y = (v.to(device) for v in window_batch(windows, rows))
    ctx = (
        torch.autocast(device_type=device.type, dtype=torch.bfloat16)
        if autocast
        else contextlib.nullcontext()
    )
    with ctx:
        if params is None:
            with torch.no_grad():
                logits = model(input_ids=x).logits
        else:
            logits = functional_call(model, params, args=(), kwargs={"input_ids": x}).logits
    return _nll_rows(logits, y)


class CalibrationObjective:
    """The objective of the module doc on calibration-role windows of two probes."""

    def __init__(self, merger, domain, general, knob: float, settings: LearnSettings, autocast):
        self.model, self.domain, self.general = merger.model, domain, general
        self.settings, self.autocast = settings, autocast
        gen_rows = list(range(len(general.inputs)))
        merger.apply_layer_t([0.0] * merger.num_layers, other_t=0.0)  # the base
        g_base, _ = window_nll(self.model, general, gen_rows, autocast=autocast)
        merger.reset()  # the adapted model
        g_adapted, self.g_tokens = window_nll(self.model, general, gen_rows, autocast=autocast)
        budget = 1.0 - float(knob)
        self.g_target = g_base + budget * (g_adapted - g_base)  # per window
        self.g_base, self.g_adapted = g_base, g_adapted
        gen = torch.Generator().manual_seed(settings.seed)
        self._orders = {
            "domain": torch.randperm(len(domain.inputs), generator=gen).tolist(),
            "general": torch.randperm(len(general.inputs), generator=gen).tolist(),
        }

    def _rows(self, which: str, step: int) -> list[int]:
        order, k = self._orders[which], self.settings.windows_per_step
        return [order[(step * k + j) % len(order)] for j in range(min(k, len(order)))]

    def __call__(self, step: int, params: dict[str, torch.Tensor]):
        d_rows, g_rows = self._rows("domain", step), self._rows("general", step)
        d_nll, d_tok = window_nll(self.model, self.domain, d_rows, params, self.autocast)
        g_nll, g_tok = window_nll(self.model, self.general, g_rows, params, self.autocast)
        domain = d_nll.sum() / d_tok.sum().clamp(min=1)
        excess = (g_nll.sum() - self.g_target[g_rows].sum()) / g_tok.sum().clamp(min=1)
        return domain, excess


def learned_schedule(merger, probes: Mapping, tokenizer, knob: float, settings: LearnSettings,
                     progress: bool = False) -> tuple[Schedule, dict]:  # fmt: skip
    """Fit the learned point at `knob` on the calibration probes (`probes`: general, finance,
    built with role="calibration"); returns the schedule and a record of the fit. Knob 0 and 1
    are the exact ends (adapted, base) without a fit."""
    num_layers = merger.num_layers
    if knob in (0.0, 1.0):
        return make_schedule("learned", knob, num_layers), {"fitted": False}
    for name, probe in probes.items():
        if probe.role != "calibration":
            raise UserError(f"learned family: probe {name} reads {probe.role} text; it must "
                            "fit on calibration text only")  # fmt: skip
    from spear_mm.eval.probe import use_autocast

    autocast = use_autocast(merger.model, probes["finance"].autocast_bf16)
    domain_w, general_w = probes["finance"].windows(tokenizer), probes["general"].windows(tokenizer)
    objective = CalibrationObjective(merger, domain_w, general_w, knob, settings, autocast)
    device = next(merger.model.parameters()).device
    dtype = {n: p.dtype for n, p in merger.params.items()}
    base = {n: merger.base_state[merger._base_name(n)].to(device, dtype[n]) for n in merger.names}
    adapted = {n: merger.adapted_state[n].to(device, dtype[n]) for n in merger.names}
    result = fit(objective, base, adapted, num_layers, knob, settings, progress)
    merger.reset()
    record = {
        "fitted": True,
        "parameters": [round(float(x), 6) for x in result.theta],
        "n_parameters": n_params(settings.knots),
        "settings": dataclasses.asdict(settings),
        "calibration_ids": {n: list(p.documents(tokenizer)["ids"]) for n, p in probes.items()},
        "trace": result.trace,
    }
    return to_schedule(result.theta, knob, num_layers, settings.knots), record
