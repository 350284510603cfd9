"""mergekit YAML read with mergekit 0.1.5's semantics: `slerp`, `linear` and the task-vector
methods (`task_arithmetic`, `ties`, `dare_ties`, `dare_linear`, `breadcrumbs`, `breadcrumbs_ties`)
with one adapted model and a base. (Native → mergekit export: `merge.mergekit_export`.)

Semantics reproduced (written from mergekit's documented behaviour, not its code):
- `models:` is one slice over all layers; `slices:` concatenate, each with its own layer range.
  Only slices whose two sources share a layer range that continues the previous slice are
  accepted (a merge, not a layer-stacking "frankenmerge").
- Inside a slice the i-th of n layers sits at position i/(n − 1) (1 for a one-layer slice);
  embeddings take the first slice's parameters at position 0, the final norm and lm_head the last
  slice's at position 0. A gradient (list) is read at that position.
- A parameter value may be a list of `{filter, value}`: the first entry whose filter is a
  substring of the tensor name (or is missing / `*`) wins; no match falls through to the next
  scope. Scopes, highest first: the source model's own parameters (per-model parameters only:
  `linear`'s weight, the task-vector methods' weight, density and gamma; slerp's `t`, `lambda`,
  `normalize`, `rescale` are shared, so mergekit ignores them there), the slice's, the top level's.
- `dtype` casts the inputs and rounds the result before `out_dtype`.
- Values outside a parameter's meaningful range (registry `Param`s: t, weight, lambda in [0, 1],
  density and gamma in [0, 1]) are errors naming the key; `allow_extrapolation: true` at the top
  level (mergekit itself ignores the key) lets t, weight and lambda go beyond.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from spear_mm.errors import UserError
from spear_mm.io.archmap import classify
from spear_mm.io.checkpoint import parse_dtype
from spear_mm.merge import methods as registry
from spear_mm.merge.mergekit_export import export_mergekit
from spear_mm.merge.methods.base import Param, T
from spear_mm.merge.plan import TensorPlan, gradient_value, layer_position
from spear_mm.merge.recipe_base import Recipe, check_range, validation_message

Params = dict[str, Any] | None
UNSUPPORTED_KEYS = ("modules", "tokenizer_source", "tokenizer", "chat_template")
# Parameters mergekit reads per model (the rest are shared by the slice / the whole merge).
PER_MODEL = ("weight", "density", "gamma")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str
    parameters: dict[str, Any] | None = None


class _Source(_Model):
    layer_range: tuple[int, int]


class _Slice(BaseModel):
    model_config = ConfigDict(extra="forbid")
    sources: list[_Source]
    base_model: str | None = None
    parameters: dict[str, Any] | None = None


class MergekitSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    merge_method: str
    base_model: str | None = None
    models: list[_Model] | None = None
    slices: list[_Slice] | None = None
    parameters: dict[str, Any] | None = None
    dtype: str | None = None
    out_dtype: str | None = None
    allow_extrapolation: bool = False


@dataclass(frozen=True)
class _SliceDef:
    start: int
    stop: int
    params: Params
    source_params: dict[str, Params]
    where: str


def _evaluate(setting: Any, name: str, pos: float, where: str) -> Any:
    """A parameter's value for one tensor (None: no filter matched, try the next scope)."""
    if isinstance(setting, dict):
        setting = [setting]
    if isinstance(setting, (bool, int, float, str)):
        return setting
    if not isinstance(setting, list) or not setting:
        return None
    if all(isinstance(v, (bool, int, float, str)) for v in setting):
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in setting):
            return gradient_value(setting, pos)
        return setting[int(pos * (len(setting) - 1))]
    for cond in setting:
        if not isinstance(cond, dict) or "value" not in cond:
            raise UserError(
                f"{where}: each entry of a filtered list needs 'value' (and "
                f"optionally 'filter'); got {cond!r}"
            )
        flt = cond.get("filter")
        if flt is None or flt == "*" or (name and str(flt) in name):
            return _evaluate(cond["value"], name, pos, where)
    return None


def _resolve(name: str, key: str, scopes: list[tuple[str, Params]], pos: float):
    for where, params in scopes:
        if params and key in params:
            value = _evaluate(params[key], name, pos, f"{where}.parameters.{key}")
            if value is not None:
                return value, f"{where}.parameters.{key}"
    return None, None


@dataclass
class MergekitRecipe(Recipe):
    spec: MergekitSpec | None = None
    method: str = "slerp"
    base_ref: str = ""
    adapted_ref: str = ""
    slices_: tuple[_SliceDef, ...] = ()

    def plan(self, names: list[str], num_layers: int) -> dict[str, TensorPlan]:
        slices = self._slices(num_layers)
        plans = {}
        for name in names:
            info = classify(name)
            if info.layer is None:
                sl = slices[0] if info.kind == "embed" else slices[-1]
                pos = 0.0
            else:
                sl = next(s for s in slices if s.start <= info.layer < s.stop)
                pos = layer_position(info.layer - sl.start, sl.stop - sl.start)
            plans[name] = self._plan_one(name, sl, pos)
        return plans

    def _slices(self, num_layers: int) -> tuple[_SliceDef, ...]:
        slices = self.slices_ or (_SliceDef(0, num_layers, None, self._model_params(), "models"),)
        if slices[-1].stop != num_layers:
            raise UserError(
                f"{self.where}: slices cover layers 0-{slices[-1].stop - 1} but the "
                f"model has {num_layers}; spear-mm merges every layer"
            )
        return slices

    def _model_params(self) -> dict[str, Params]:
        assert self.spec is not None
        out: dict[str, Params] = {}
        for m in self.spec.models or []:
            out.setdefault(m.model, m.parameters)
        return out

    def _plan_one(self, name: str, sl: _SliceDef, pos: float) -> TensorPlan:
        assert self.spec is not None
        top = ("parameters", self.spec.parameters)
        shared = [(f"{sl.where}", sl.params), top] if sl.params is not None else [top]
        if self.method == "slerp":
            t, rule = _resolve(name, "t", shared, pos)
            if t is None:
                raise UserError(
                    f"{self.where}: no value of parameter t for tensor {name}; "
                    "add parameters.t (a number, a gradient or filter entries)"
                )
            return TensorPlan(t=_number(t, name, self.where), method="slerp", rule=rule)
        if registry.get(self.method).task_vector:
            return self._task_vector_plan(name, sl, pos, shared)
        weights = []
        for ref in (self.base_ref, self.adapted_ref):
            scopes = [(f"{sl.where}[{ref}]", sl.source_params.get(ref)), *shared]
            w, _ = _resolve(name, "weight", scopes, pos)
            if w is None:
                raise UserError(
                    f"{self.where}: no weight for model {ref} at tensor {name}; "
                    "linear needs parameters.weight for every model"
                )
            weights.append(_number(w, name, self.where))
        norm, _ = _resolve(name, "normalize", shared, pos)
        normalize = True if norm is None else bool(norm)
        wb, wa = weights
        t = wa / (wa + wb) if normalize and (wa + wb) != 0 else wa
        return TensorPlan(
            t=t, method="linear", rule="weights", weights=(wb, wa), normalize=normalize
        )

    def _task_vector_plan(self, name: str, sl: _SliceDef, pos: float, shared) -> TensorPlan:
        """Every parameter of the method for this tensor (per-model ones from the adapted
        model's scope first); `t` (for the report) is the task vector's effective scale."""
        ref = self.adapted_ref
        own = [(f"{sl.where}[{ref}]", sl.source_params.get(ref)), *shared]
        values, rule = {}, "parameters"
        for p in registry.get(self.method).params:
            if "mergekit" not in p.formats:
                continue
            v, where = _resolve(name, p.name, own if p.name in PER_MODEL else shared, pos)
            if v is None and p.name == "weight":
                raise UserError(
                    f"{self.where}: no weight for model {ref} at tensor {name}; "
                    f"{self.method} needs parameters.weight for the adapted model"
                )
            if v is not None:
                values[p.name] = bool(v) if p.kind == "bool" else _number(v, name, self.where)
                rule = where if p.name == "weight" else rule
        full = {p.name: p.default for p in registry.get(self.method).params} | values
        scale = full["lambda"] * (1.0 if full["normalize"] else full["weight"])
        return TensorPlan(
            t=float(scale), method=self.method, rule=rule, params=tuple(sorted(values.items()))
        )


def _number(value: Any, name: str, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        try:
            return float(value)
        except (TypeError, ValueError):
            raise UserError(
                f"{where}: parameter value {value!r} for tensor {name} is not a number"
            ) from None
    return float(value)


def _pick_models(spec: MergekitSpec, where: str) -> tuple[str, str]:
    refs: list[str] = []
    for m in spec.models or []:
        refs.append(m.model)
    for s in spec.slices or []:
        refs.extend(src.model for src in s.sources)
        if s.base_model not in (None, spec.base_model):
            raise UserError(
                f"{where}: per-slice base_model is not supported; set the top-level base_model"
            )
    if spec.base_model:
        refs.append(spec.base_model)
    unique = list(dict.fromkeys(refs))
    if len(unique) != 2:
        raise UserError(
            f"{where}: spear-mm merges exactly two models (base and adapted); "
            f"found {len(unique)}: {', '.join(unique) or 'none'}"
        )
    if spec.merge_method != "linear" and not spec.base_model:
        raise UserError(
            f"{where}: key 'base_model': {spec.merge_method} needs base_model (the model the "
            "others are merged into)"
        )
    base = spec.base_model or unique[0]
    adapted = unique[1] if unique[0] == base else unique[0]
    for ref in (base, adapted):
        if "+" in ref:
            raise UserError(
                f"{where}: model '{ref}': LoRA references (model+lora) are not "
                "supported; merge the adapter first"
            )
    return base, adapted


def _slice_defs(spec: MergekitSpec, where: str) -> tuple[_SliceDef, ...]:
    out: list[_SliceDef] = []
    expect = 0
    for k, s in enumerate(spec.slices or []):
        ranges = {tuple(src.layer_range) for src in s.sources}
        start, stop = ranges.pop()
        if ranges or start != expect or stop <= start:
            raise UserError(
                f"{where}: key 'slices[{k}]': sources must share one layer_range "
                f"that continues the previous slice (expected to start at {expect}); "
                "layer stacking is not supported"
            )
        params = {src.model: src.parameters for src in s.sources}
        out.append(_SliceDef(start, stop, s.parameters or {}, params, f"slices[{k}]"))
        expect = stop
    return tuple(out)


def mergekit_recipe(data: dict, source: Path | None) -> MergekitRecipe:
    """Validate mergekit YAML and return the equivalent recipe."""
    where = f"recipe {source}" if source else "recipe"
    for key in UNSUPPORTED_KEYS:
        if data.get(key) is not None:
            raise UserError(
                f"{where}: key '{key}' is not supported by spear-mm (the output "
                "keeps the adapted model's tokenizer and vocabulary); remove it"
            )
    try:
        spec = MergekitSpec.model_validate(data)
    except ValidationError as exc:
        raise UserError(validation_message(exc, where)) from None
    allowed = registry.names("mergekit")
    if spec.merge_method not in allowed:
        raise UserError(
            f"{where}: key 'merge_method': {spec.merge_method!r} is not supported; "
            f"allowed: {', '.join(allowed)}"
        )
    _check_parameters(spec, where)
    if bool(spec.models) == bool(spec.slices):
        raise UserError(f"{where}: give exactly one of 'models' or 'slices'")
    base, adapted = _pick_models(spec, where)
    return MergekitRecipe(
        base=base,
        adapted=adapted,
        source=source,
        format="mergekit",
        out_dtype=parse_dtype(spec.out_dtype or spec.dtype, f"{where} out_dtype"),
        compute_dtype=parse_dtype(spec.dtype, f"{where} dtype"),
        round_to_compute=True,
        allow_extrapolation=spec.allow_extrapolation,
        spec=spec,
        method=spec.merge_method,
        base_ref=base,
        adapted_ref=adapted,
        slices_=_slice_defs(spec, where),
    )


def _parameter_scopes(spec: MergekitSpec):
    """(key path, parameters) of every scope of the file."""
    yield "parameters", spec.parameters
    for i, m in enumerate(spec.models or []):
        yield f"models[{i}].parameters", m.parameters
    for k, sl in enumerate(spec.slices or []):
        yield f"slices[{k}].parameters", sl.parameters
        for j, src in enumerate(sl.sources):
            yield f"slices[{k}].sources[{j}].parameters", src.parameters


def _leaves(value: Any, key: str):
    """(key path, number or bool) of every value a parameter setting holds: scalars, gradient
    anchors and the values of filter entries."""
    if isinstance(value, dict):
        value = [value]
    if isinstance(value, list):
        for i, item in enumerate(value):
            if isinstance(item, dict):
                yield from _leaves(item.get("value"), f"{key}[{i}].value")
            else:
                yield f"{key}[{i}]", item
    elif value is not None:
        yield key, value


def _check_parameters(spec: MergekitSpec, where: str) -> None:
    """Parameter names known to the method and every value in its meaningful range."""
    method = registry.get(spec.merge_method)
    known: dict[str, Param] = {p.name: p for p in method.params if "mergekit" in p.formats}
    if spec.merge_method == "slerp":
        known["t"] = T
    for scope, params in _parameter_scopes(spec):
        for name, setting in (params or {}).items():
            if name not in known:
                raise UserError(
                    f"{where}: key '{scope}.{name}': not a parameter of {spec.merge_method}; "
                    f"allowed: {', '.join(known)}"
                )
            for key, value in _leaves(setting, f"{scope}.{name}"):
                if isinstance(value, (int, float)) or known[name].kind == "bool":
                    check_range(known[name], value, key, where, spec.allow_extrapolation)


__all__ = ["MergekitRecipe", "export_mergekit", "mergekit_recipe"]
