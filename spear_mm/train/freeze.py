"""Freezing parameters during CPT: regex lists and freeze-plan files.

Freeze-plan file (YAML or JSON; what `spear-mm analyze` writes), format version 1:

    version: 1
    freeze:            # Python regexes, matched with re.search against each tensor name
      - "^model\\.embed_tokens\\."
    layers: [0, 1, -1] # every tensor of these decoder layers; negative counts from the end
    note: "free text, ignored"

A bare YAML/JSON list is read as `freeze:`. `trainer.freeze` regexes and the plan's entries add
up. Every regex must match at least one tensor (a typo would otherwise silently train
everything). Tied tensors are one parameter with several names (SmolLM2: `lm_head.weight` is
`model.embed_tokens.weight`): matching any of its names freezes the shared parameter.

Frozen parameters get `requires_grad=False` before the model is wrapped and are left out of the
optimizer, so no update, weight decay or optimizer state ever touches them: they stay
bit-identical. Under FSDP this needs `use_orig_params: true` (FSDP1 flattens a unit's
parameters into one FlatParameter and only keeps per-parameter `requires_grad` with original
params); the shipped `spear_mm/train/accelerate/fsdp*.yaml` set it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from spear_mm.errors import UserError
from spear_mm.io.archmap import classify


@dataclass
class FreezePlan:
    """Regexes and decoder-layer indices to freeze."""

    patterns: list[str] = field(default_factory=list)
    layers: list[int] = field(default_factory=list)


def load_freeze_plan(path: str | Path) -> FreezePlan:
    """Read a freeze-plan file (format in the module doc)."""
    path = Path(path).expanduser()
    key = "trainer.freeze_plan"
    if not path.is_file():
        raise UserError(f"{key}: file {path} not found; give the plan written by spear-mm analyze")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))  # JSON is YAML too
    except yaml.YAMLError as exc:
        raise UserError(f"{key}: {path} is not YAML/JSON ({str(exc).splitlines()[0]})") from None
    if isinstance(raw, list):
        raw = {"freeze": raw}
    if not isinstance(raw, dict):
        raise UserError(f"{key}: {path} must be a mapping with 'freeze' and/or 'layers'")
    unknown = set(raw) - {"version", "freeze", "layers", "note"}
    if unknown:
        raise UserError(
            f"{key}: {path} has unknown key(s) {sorted(unknown)}; "
            "allowed: version, freeze, layers, note"
        )
    if raw.get("version", 1) != 1:
        raise UserError(f"{key}: {path} has version {raw.get('version')}; this build reads 1")
    patterns = raw.get("freeze") or []
    layers = raw.get("layers") or []
    if not all(isinstance(p, str) for p in patterns):
        raise UserError(f"{key}: {path} 'freeze' must be a list of regex strings")
    if not all(isinstance(i, int) and not isinstance(i, bool) for i in layers):
        raise UserError(f"{key}: {path} 'layers' must be a list of integers")
    return FreezePlan(list(patterns), list(layers))


def _compile(pattern: str, source: str) -> re.Pattern:
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise UserError(
            f"{source}: regex {pattern!r} is invalid ({exc}); fix or quote it"
        ) from None


def select_frozen(
    aliases: dict[str, list[str]], plan: FreezePlan, num_layers: int, source: str = "trainer.freeze"
) -> set[str]:
    """Canonical names to freeze. `aliases` maps each parameter's canonical name to all its names.

    Pure: raises `UserError` for a regex that matches nothing or a layer index out of range.
    """
    frozen: set[str] = set()
    for pattern in plan.patterns:
        rx = _compile(pattern, source)
        hit = {c for c, names in aliases.items() if any(rx.search(n) for n in names)}
        if not hit:
            raise UserError(
                f"{source}: regex {pattern!r} matches no tensor; check the names "
                "(e.g. model.layers.0.mlp.down_proj.weight)"
            )
        frozen |= hit
    for index in plan.layers:
        layer = index + num_layers if index < 0 else index
        if not 0 <= layer < num_layers:
            raise UserError(
                f"{source}: layer {index} is out of range for a model with {num_layers} layers"
            )
        frozen |= {
            c for c, names in aliases.items() if any(classify(n).layer == layer for n in names)
        }
    return frozen


def parameter_aliases(model) -> dict[str, list[str]]:
    """Canonical parameter name → every name it has in the module tree (tied weights)."""
    by_id: dict[int, list[str]] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        by_id.setdefault(id(p), []).append(name)
    return {names[0]: names for names in by_id.values()}


def apply_freeze(model, patterns: list[str], plan_path: str | None, num_layers: int) -> list[str]:
    """Set `requires_grad=False` on the selected parameters; return their canonical names."""
    plan = FreezePlan(list(patterns), [])
    frozen = select_frozen(parameter_aliases(model), plan, num_layers, "trainer.freeze")
    if plan_path:
        frozen |= select_frozen(
            parameter_aliases(model),
            load_freeze_plan(plan_path),
            num_layers,
            f"trainer.freeze_plan ({plan_path})",
        )
    params = dict(model.named_parameters())
    if frozen and len(frozen) == len(params):
        raise UserError(
            "trainer.freeze: every parameter is frozen, nothing would train; freeze fewer tensors"
        )
    for name in frozen:
        params[name].requires_grad_(False)
    return sorted(frozen)
