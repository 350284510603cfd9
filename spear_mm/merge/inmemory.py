"""In-memory merging for sweeps: write merged weights into a live model's parameters, in place.

`InMemoryMerger` holds the base and adapted weights once (CPU tensors, as stored) and, for each
sweep point, overwrites the model's parameters with the merge — no disk round trip, no reload.
It plans and merges each tensor with the same code as the disk executor (spear_mm.merge.apply),
so `apply(recipe)` leaves the model with exactly the tensors `spear-mm merge` would write.

Tied embeddings: the model's tied lm_head is the embedding parameter (named_parameters lists it
once), so it is merged once and stays tied.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import torch

from spear_mm.errors import UserError
from spear_mm.io.archmap import classify, is_tied
from spear_mm.merge import kernels
from spear_mm.merge.apply import DtypePolicy, all_finite, merge_tensor, new_rows
from spear_mm.merge.plan import TensorPlan
from spear_mm.merge.recipe import Recipe
from spear_mm.merge.report import summarize


class InMemoryMerger:
    """Merge base and adapted weights into `model` in place.

    `base_state` / `adapted_state` map checkpoint names to CPU tensors (any float dtype); every
    parameter of `model` must be in `adapted_state`, with the same shape, and in `base_state`
    (or be a vocabulary-grown embedding / lm_head; see spear_mm.merge.apply).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        base_state: Mapping[str, torch.Tensor],
        adapted_state: Mapping[str, torch.Tensor],
    ):
        self.model = model
        self.base_state = dict(base_state)
        self.adapted_state = dict(adapted_state)
        self.params = dict(model.named_parameters())  # tied weights appear once
        config = getattr(getattr(model, "config", None), "to_dict", dict)()
        self.num_layers = int(config.get("num_hidden_layers", 0)) or _count_layers(self.params)
        for name, param in self.params.items():
            if name not in self.adapted_state:
                raise UserError(f"parameter {name} of the model is not in the adapted weights")
            if tuple(self.adapted_state[name].shape) != tuple(param.shape):
                raise UserError(
                    f"parameter {name}: model shape {list(param.shape)} differs "
                    f"from adapted {list(self.adapted_state[name].shape)}"
                )
            base = self.base_state.get(self._base_name(name))
            if base is None:
                raise UserError(f"parameter {name} is not in the base weights")
            new_rows(name, classify(name).kind, base.shape, param.shape)
        self.names = list(self.params)

    def _base_name(self, name: str) -> str:
        if name in self.base_state or classify(name).kind != "lm_head":
            return name
        if is_tied({}, list(self.base_state)):
            return next((n for n in self.base_state if classify(n).kind == "embed"), name)
        return name

    @classmethod
    def from_pretrained(
        cls,
        base_spec: str | os.PathLike,
        adapted_spec: str | os.PathLike,
        dtype: torch.dtype = torch.float32,
        *,
        allow_pickle: bool = False,
    ):
        """Load the adapted model (AutoModelForCausalLM) and both weight sets from folders, hub
        ids or built-ins; the model's parameters are `dtype`, the held weights stay as stored."""
        from transformers import AutoModelForCausalLM

        from spear_mm.io.checkpoint import CheckpointReader
        from spear_mm.io.sources import resolve_model

        base_dir, adapted_dir = resolve_model(base_spec), resolve_model(adapted_spec)
        with CheckpointReader(base_dir, allow_pickle=allow_pickle) as reader:
            base_state = reader.state_dict()
        with CheckpointReader(adapted_dir, allow_pickle=allow_pickle) as reader:
            adapted_state = reader.state_dict()
        model = AutoModelForCausalLM.from_pretrained(adapted_dir, dtype=dtype)
        model.eval()
        return cls(model, base_state, adapted_state)

    # -- merging ----------------------------------------------------------------------------
    def apply(self, recipe: Recipe) -> dict:
        """Merge with `recipe`'s plans and dtypes; returns {summary, tensors} like the report."""
        plans = recipe.plan(self.names, self.num_layers)
        policy = DtypePolicy(recipe.out_dtype, recipe.compute_dtype, recipe.round_to_compute)
        return self._apply(plans, policy, stats=True)

    def apply_layer_t(
        self,
        layer_t: Sequence[float],
        *,
        other_t: float = 1.0,
        method: str = "lerp",
        stats: bool = False,
    ) -> dict:
        """Fast path for sweeps: t per layer (layers 0..L-1), `other_t` for the tensors outside
        the blocks (embeddings, final norm, lm_head). `stats=False` skips the cosines."""
        if len(layer_t) != self.num_layers:
            raise UserError(
                f"layer_t has {len(layer_t)} values; the model has {self.num_layers} layers"
            )
        plans = {}
        for name in self.names:
            layer = classify(name).layer
            t = float(other_t if layer is None else layer_t[layer])
            plans[name] = TensorPlan(t=t, method=method, rule="layer_t")
        if method == "lerp" and not stats:
            plans = self._lerp_in_place(plans)
        return self._apply(plans, DtypePolicy(), stats=stats)

    def _lerp_in_place(self, plans: dict[str, TensorPlan]) -> dict[str, TensorPlan]:
        """Write LERP results straight into the parameters; returns the plans left to do.

        The same operations as `kernels.lerp` (a·(1 − t) + b·t, each product rounded in the
        compute dtype, then the sum), so the result is bit-identical to the disk executor's, but
        with no temporary output tensor and no copy: about half the memory traffic per sweep
        point. Tensors it cannot do this way (copies at t = 0 / 1, grown vocabularies, a compute
        dtype other than the parameter's) go through the general path. Each held pair is checked
        finite once, on first use; a convex combination of finite values is finite, so the
        general path's output check need not be repeated per point.
        """
        rest = {}
        checked = self.__dict__.setdefault("_finite_checked", set())
        with torch.no_grad():
            for name, plan in plans.items():
                param = self.params[name]
                a = self.base_state[self._base_name(name)]
                b = self.adapted_state[name]
                if not 0.0 < plan.t < 1.0 or a.shape != b.shape or b.shape != param.shape:
                    rest[name] = plan
                    continue
                dtype = kernels.compute_dtype(a, b)
                if dtype != param.dtype or param.device.type != "cpu":
                    rest[name] = plan
                    continue
                if name not in checked:
                    for which, x in (("base", a), ("adapted", b)):
                        if not all_finite(x):
                            raise UserError(
                                f"tensor {name}: the {which} weights contain NaN or "
                                "Inf; fix the checkpoint before merging"
                            )
                    checked.add(name)
                t_c = torch.tensor(plan.t, dtype=dtype)
                torch.mul(a.to(dtype), 1 - t_c, out=param)
                param.add_(b.to(dtype) * t_c)
        return rest

    def reset(self) -> None:
        """Put the adapted weights back."""
        with torch.no_grad():
            for name, param in self.params.items():
                param.copy_(self.adapted_state[name])

    def _apply(self, plans: dict[str, TensorPlan], policy: DtypePolicy, stats: bool) -> dict:
        entries = {}
        with torch.no_grad():
            for name, plan in plans.items():
                param = self.params[name]
                # Output dtype: the recipe's if it names one (rounded there, as on disk), then
                # the parameter's own.
                pol = DtypePolicy(
                    policy.out or param.dtype, policy.compute, policy.round_to_compute
                )
                merged, entry = merge_tensor(
                    name,
                    classify(name).kind,
                    self.base_state[self._base_name(name)],
                    self.adapted_state[name],
                    plans[name],
                    pol,
                    stats=stats,
                    device=param.device,
                )
                param.copy_(merged)
                entries[name] = entry
        return {"summary": summarize(entries), "tensors": entries}


def _count_layers(params: Mapping[str, torch.Tensor]) -> int:
    layers = [classify(n).layer for n in params]
    return max((x for x in layers if x is not None), default=-1) + 1
