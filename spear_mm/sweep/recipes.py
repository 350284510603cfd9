"""Sweep point → a native merge recipe (validated by the merge package's own recipe model).

A schedule becomes one rule per run of layers that share a t (``{layers: "0-29", t: 0.75}`` for
a uniform point, one rule per layer for a graded one) and ``default: <t>`` for everything outside
the blocks (embeddings, final norm, lm_head). t values are rounded to `T_DIGITS` decimals so the
files stay readable; the in-memory merge applies the very recipe that is written, so the file and
the scored weights agree exactly. Knob 0 gives every t = 1 (the adapted model, copied verbatim)
and knob 1 every t = 0 (the base).

A ``kinds`` point has one rule per kind group and run of layers (``{kinds: attention, layers:
"0-3", t: ...}``) and one for the final norm; a task-vector point names its method and
`parameters` (``method: ties``, ``parameters: {density: 0.7}``).
"""

from __future__ import annotations

import os

import yaml

from spear_mm.sweep.schedule import Schedule

T_DIGITS = 6


def _round_t(t: float) -> float:
    return float(round(t, T_DIGITS))


def _runs(values: list[float]) -> list[tuple[int, int, float]]:
    """Maximal runs (first, last, value) of equal consecutive values."""
    runs: list[tuple[int, int, float]] = []
    for i, v in enumerate(values):
        if runs and runs[-1][2] == v:
            runs[-1] = (runs[-1][0], i, v)
        else:
            runs.append((i, i, v))
    return runs


def recipe_dict(
    schedule: Schedule, base: str | os.PathLike, adapted: str | os.PathLike, method: str = "lerp"
) -> dict:
    """The native recipe mapping of `schedule` (see the module doc)."""
    rules: list[dict] = []
    kinds = schedule.kind_restore or ((None, schedule.layer_restore),)
    for group, restore in kinds:
        for lo, hi, t in _runs([_round_t(1.0 - r) for r in restore]):
            rule = {"layers": lo if lo == hi else f"{lo}-{hi}", "t": t}
            rules.append(rule if group is None else {"kinds": group, **rule})
    if schedule.final_norm_restore is not None:
        rules.append({"kinds": "norm_final", "t": _round_t(1.0 - schedule.final_norm_restore)})
    data = {
        "base": str(base),
        "adapted": str(adapted),
        "method": schedule.method or method,
        "default": _round_t(schedule.nonlayer_t),
        "rules": rules,
    }
    if schedule.params:
        data["parameters"] = dict(schedule.params)
    return data


def recipe_yaml(schedule: Schedule, data: dict) -> str:
    """YAML text of a recipe with a header comment that says which sweep point it is."""
    head = (
        f"# spear-mm sweep point: family={schedule.family} knob={schedule.knob:.6g} "
        f"(0 = adapted, 1 = base)\n"
        f"# mean restore {schedule.mean_restore:.4f}; t = weight of the ADAPTED model\n"
    )
    if schedule.inert:
        layers = ", ".join(str(i) for i in schedule.inert)
        head += (
            f"# layers {layers}: identical in base and adapted, not restored; their t is "
            "irrelevant (every t gives the same weights)\n"
        )
    if schedule.params:
        head += "# " + ", ".join(f"{k} = {v:g}" for k, v in schedule.params) + " (the knob)\n"
    return head + yaml.safe_dump(data, sort_keys=False, default_flow_style=None, width=100)


def point_filename(family: str, knob: float) -> str:
    """`<family>_<knob>.yaml`, knob with 4 decimals, or 6 when it needs them (deep bisection:
    the solver rounds refined knobs to 6 decimals, so names never collide)."""
    text = f"{knob:.4f}" if round(knob, 4) == knob else f"{knob:.6f}"
    return f"{family}_{text}.yaml"
