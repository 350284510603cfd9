"""Native merge recipes (YAML): base, adapted, output dtype, a default and ordered rules.

```yaml
base: smollm2-135m              # folder, hub id or built-in
adapted: runs/cpt/final
dtype: bfloat16                 # output dtype (default: the adapted checkpoint's)
method: slerp                   # any native method of the registry (rules may override)
default: keep                   # keep | freeze | t (0..1) | [t anchors] for unmatched tensors
parameters: {density: 0.3}      # method parameters (task-vector methods), rules may override
rules:                          # later rules override earlier ones
  - {kinds: [attention, mlp], layers: "0-7", t: [0.3, 0.9]}
  - {kinds: embeddings, action: freeze}
```

Selection is the AND of `layers`, `kinds` and `match`; a missing selector matches everything.
The last rule that matches a tensor decides its action, t, method and parameters; no match →
`default`. t outside [0, 1] needs `allow_extrapolation: true`. See docs/recipes.md for the full
reference; `merge.recipe.load_recipe` reads both this and mergekit YAML.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator

from spear_mm.errors import UserError
from spear_mm.io.archmap import GROUPS, KINDS, TensorInfo, classify
from spear_mm.io.checkpoint import parse_dtype
from spear_mm.merge import methods
from spear_mm.merge.methods.base import T
from spear_mm.merge.plan import TensorPlan, gradient_value, layer_position
from spear_mm.merge.recipe_base import Recipe, check_range, validation_message

ACTIONS = ("freeze", "keep", "restore")
_RANGE = re.compile(r"^\s*(\d+)\s*-\s*(\d+)\s*$")


def _check_t(value: Any, *, allow_list: bool = True) -> float | list[float]:
    """A number or (when allowed) a non-empty list of them (a gradient). The range [0, 1] is
    checked after parsing (`_check_ranges`), where `allow_extrapolation` is known."""
    if isinstance(value, bool):
        raise ValueError("t must be a number in [0, 1] or a list of anchors, not a boolean")
    if isinstance(value, (int, float)):
        return float(value)
    if allow_list and isinstance(value, list) and value:
        return [_check_t(v, allow_list=False) for v in value]  # type: ignore[misc]
    raise ValueError("t must be a number in [0, 1] or a non-empty list of such anchors")


def _check_params(value: Any) -> dict[str, Any] | None:
    """A mapping of method parameters; names and ranges are checked against the registry later."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ValueError("parameters must be a mapping, e.g. {density: 0.3}")
    for key, v in value.items():
        if isinstance(v, list):
            if not v or any(isinstance(x, (bool, list, dict)) for x in v):
                raise ValueError(f"parameter {key}: a list must be non-empty gradient anchors")
        elif v is not None and not isinstance(v, (bool, int, float)):
            raise ValueError(f"parameter {key}: a number, true/false or a list of anchors")
    return value


def _check_layer_item(item: Any) -> int | tuple[int, int]:
    if isinstance(item, bool):
        raise ValueError("layers must be an index, a range 'A-B' or a list of them")
    if isinstance(item, int):
        return item
    if isinstance(item, str) and _RANGE.match(item):
        lo, hi = (int(g) for g in _RANGE.match(item).groups())  # type: ignore[union-attr]
        if hi < lo:
            raise ValueError(f"layer range '{item}' is empty (A-B needs A <= B, both inclusive)")
        return (lo, hi)
    raise ValueError(
        f"layers entry {item!r}: allowed an index (e.g. 3, -1), a range 'A-B' "
        "(inclusive) or a list of them"
    )


class RuleSpec(BaseModel):
    """One rule: selectors (`layers`, `kinds`, `match`) and what to do (`action`, `t`, `method`)."""

    model_config = ConfigDict(extra="forbid")
    layers: Any = None
    kinds: Any = None
    match: str | None = None
    action: str | None = None
    t: Any = None
    method: str | None = None
    parameters: Any = None

    @field_validator("layers")
    @classmethod
    def _layers(cls, value):
        if value is None:
            return None
        items = value if isinstance(value, list) else [value]
        if not items:
            raise ValueError("layers is an empty list; omit it to select every layer")
        return [_check_layer_item(i) for i in items]

    @field_validator("kinds")
    @classmethod
    def _kinds(cls, value):
        if value is None:
            return None
        items = value if isinstance(value, list) else [value]
        bad = [k for k in items if k not in GROUPS and k not in KINDS]
        if bad or not items:
            raise ValueError(
                f"unknown kind {bad[0] if bad else '[]'!r}; allowed: "
                f"{', '.join(GROUPS)} or one of {', '.join(KINDS)}"
            )
        return items

    @field_validator("match")
    @classmethod
    def _match(cls, value):
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(
                    f"match {value!r} is not a valid regular expression ({exc})"
                ) from None
        return value

    @field_validator("method")
    @classmethod
    def _method(cls, value):
        allowed = methods.names("native")
        if value is not None and value not in allowed:
            raise ValueError(f"method {value!r}; allowed: {', '.join(allowed)}")
        return value

    @field_validator("t")
    @classmethod
    def _t(cls, value):
        return None if value is None else _check_t(value)

    @field_validator("parameters")
    @classmethod
    def _parameters(cls, value):
        return _check_params(value)

    @model_validator(mode="after")
    def _action(self):
        if self.action is None:
            if self.t is None:
                raise ValueError("a rule needs an action (freeze, keep, restore) or a t")
            self.action = "restore"
        if self.action not in ACTIONS:
            raise ValueError(f"action {self.action!r}; allowed: {', '.join(ACTIONS)}")
        if self.action == "restore" and self.t is None:
            raise ValueError("action restore needs t (a number in [0, 1] or a list of anchors)")
        if self.action != "restore" and self.t is not None:
            raise ValueError(
                f"action {self.action} fixes t (freeze = 0, keep = 1); remove t "
                "or use action restore"
            )
        if self.action != "restore" and self.parameters:
            raise ValueError(
                f"action {self.action} copies the tensor; its parameters would do nothing "
                "(remove them or use action restore)"
            )
        return self


class NativeSpec(BaseModel):
    """The whole native recipe file."""

    model_config = ConfigDict(extra="forbid")
    base: str
    adapted: str
    dtype: str | None = None
    method: str = "slerp"
    default: Any = "keep"
    parameters: Any = {}
    allow_extrapolation: bool = False
    rules: list[RuleSpec] = []

    @field_validator("parameters")
    @classmethod
    def _parameters(cls, value):
        return _check_params(value) or {}

    @field_validator("method")
    @classmethod
    def _method(cls, value):
        return RuleSpec._method(value)

    @field_validator("default")
    @classmethod
    def _default(cls, value):
        if value in ("keep", "freeze"):
            return value
        try:
            return _check_t(value)
        except ValueError:
            raise ValueError(
                "default: allowed keep, freeze, a t in [0, 1] or a list of "
                f"t anchors; got {value!r}"
            ) from None

    @field_validator("dtype")
    @classmethod
    def _dtype(cls, value):
        if value is not None:
            try:
                parse_dtype(value)
            except UserError as exc:
                raise ValueError(str(exc)) from None
        return value

    def check_ranges(self, where: str) -> None:
        """t and parameter values within their meaningful ranges (UserError naming the key);
        parameters must belong to the method that uses them."""
        allow = self.allow_extrapolation
        if not isinstance(self.default, str):
            check_range(T, self.default, "default", where, allow)
        used = {self.method, *(r.method for r in self.rules if r.method)}
        _check_param_values(self.parameters, used, "parameters", where, allow)
        for i, rule in enumerate(self.rules):
            if rule.t is not None:
                check_range(T, rule.t, f"rules[{i}].t", where, allow)
            if rule.parameters:
                own = {rule.method or self.method}
                _check_param_values(rule.parameters, own, f"rules[{i}].parameters", where, allow)


def _check_param_values(params: dict, used: set[str], key: str, where: str, allow: bool) -> None:
    for name, value in params.items():
        found = (methods.get(m).param(name, "native") for m in sorted(used))
        spec = next((p for p in found if p is not None), None)
        if spec is None:
            known = sorted({p for m in used for p in methods.get(m).param_names("native")})
            raise UserError(
                f"{where}: key '{key}.{name}': not a parameter of method "
                f"{', '.join(sorted(used))}; allowed: {', '.join(known) or 'none'}"
            )
        if value is not None:
            check_range(spec, value, f"{key}.{name}", where, allow)


@dataclass
class NativeRecipe(Recipe):
    spec: NativeSpec | None = None

    def plan(self, names: list[str], num_layers: int) -> dict[str, TensorPlan]:
        """TensorPlan per name: the last matching rule wins, else the default."""
        spec = self.spec
        assert spec is not None
        infos = [classify(n) for n in names]
        all_layers = list(range(num_layers))
        selected = [self._rule_layers(i, r, num_layers) for i, r in enumerate(spec.rules)]
        used = [False] * len(spec.rules)
        self.unmatched = []  # recomputed on every plan (sweeps call plan repeatedly)
        by_kind = any(r.kinds is not None for r in spec.rules)
        self.unclassified = [i.name for i in infos if by_kind and i.kind == "other"]
        plans: dict[str, TensorPlan] = {}
        for info in infos:
            plan = self._action_plan(
                spec.default, all_layers, info, "default", spec.method, spec.parameters
            )
            for i in range(len(spec.rules) - 1, -1, -1):
                rule = spec.rules[i]
                if _matches(rule, selected[i], info):
                    used[i] = True
                    plan = self._rule_plan(rule, selected[i] or all_layers, info, i)
                    break
            plans[info.name] = plan
        # A rule shadowed by later ones still counts as matching something.
        for i, rule in enumerate(spec.rules):
            if not used[i] and not any(_matches(rule, selected[i], x) for x in infos):
                self.unmatched.append(f"rules[{i}]")
        return plans

    def _rule_layers(self, i: int, rule: RuleSpec, num_layers: int) -> list[int] | None:
        if rule.layers is None:
            return None
        out: set[int] = set()
        for item in rule.layers:
            lo, hi = item if isinstance(item, tuple) else (item, item)
            if isinstance(item, int) and item < 0:
                lo = hi = item + num_layers
            if lo < 0 or hi >= num_layers:
                raise UserError(
                    f"{self.where}: key 'rules[{i}].layers': {item!r} is out of "
                    f"range; the model has layers 0-{num_layers - 1}"
                )
            out.update(range(lo, hi + 1))
        return sorted(out)

    def _rule_plan(self, rule: RuleSpec, layers: list[int], info: TensorInfo, i: int):
        assert self.spec is not None
        value = {"freeze": 0.0, "keep": 1.0}.get(rule.action or "", rule.t)
        params = {**self.spec.parameters, **(rule.parameters or {})}
        return self._action_plan(
            value, layers, info, f"rules[{i}]", rule.method or self.spec.method, params
        )

    @staticmethod
    def _action_plan(value, layers, info: TensorInfo, rule: str, method: str, params: dict):
        """The plan of one tensor. keep / freeze copy (no method parameters); gradients
        (lists, for t and parameters alike) are read at the tensor's position among `layers`."""
        if value in ("keep", "freeze"):
            value, params = (1.0 if value == "keep" else 0.0), {}
        # Gradient anchors spread over the rule's selected layers; tensors outside the
        # blocks (embeddings, final norm, lm_head) take the first anchor, as in mergekit.
        pos = 0.0 if info.layer is None else layer_position(layers.index(info.layer), len(layers))

        def at(v):
            return gradient_value(v, pos) if isinstance(v, list) else v

        own = set(methods.get(method).param_names("native"))
        kept = tuple(sorted((k, at(v)) for k, v in params.items() if k in own and v is not None))
        return TensorPlan(t=float(at(value)), method=method, rule=rule, params=kept)


def _matches(rule: RuleSpec, layers: list[int] | None, info: TensorInfo) -> bool:
    if layers is not None and (info.layer is None or info.layer not in layers):
        return False
    if rule.kinds is not None and info.kind not in rule.kinds and info.group not in rule.kinds:
        return False
    return rule.match is None or re.search(rule.match, info.name) is not None


def check_match_patterns(recipe: Recipe, names: list[str]) -> None:
    """A native rule's `match` that matches no tensor name at all is a typo, not a no-op.

    (A rule that matches nothing because of its other selectors, e.g. an lm_head rule on a tied
    model, stays a note: see `Recipe.unmatched`.)"""
    spec = getattr(recipe, "spec", None)
    if not isinstance(spec, NativeSpec):
        return
    for i, rule in enumerate(spec.rules):
        if rule.match is not None and not any(re.search(rule.match, n) for n in names):
            example = names[0] if names else "none"
            raise UserError(
                f"{recipe.where}: key 'rules[{i}].match': {rule.match!r} matches no tensor name "
                f"of the adapted model (e.g. {example}); fix the pattern or remove the rule"
            )


def native_recipe(data: dict, source: Path | None) -> NativeRecipe:
    """Validate a native recipe mapping (UserError naming the file and the key)."""
    where = f"recipe {source}" if source else "recipe"
    try:
        spec = NativeSpec.model_validate(data)
    except ValidationError as exc:
        raise UserError(validation_message(exc, where)) from None
    spec.check_ranges(where)
    return NativeRecipe(
        base=spec.base,
        adapted=spec.adapted,
        source=source,
        format="native",
        out_dtype=parse_dtype(spec.dtype),
        allow_extrapolation=spec.allow_extrapolation,
        spec=spec,
    )
