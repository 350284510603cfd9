"""Native recipe → mergekit YAML (`spear-mm merge native.yaml --export-mergekit out.yaml`)."""

from __future__ import annotations

from typing import Any

import yaml

from spear_mm.errors import UserError
from spear_mm.io.archmap import classify
from spear_mm.merge import methods as registry
from spear_mm.merge.recipe_base import Recipe


def export_mergekit(
    recipe: Recipe,
    names: list[str],
    num_layers: int,
    out_dtype: str,
    base_ref: str | None = None,
    adapted_ref: str | None = None,
) -> str:
    """mergekit YAML that gives the same tensors as `recipe` on this checkpoint layout.

    One slice per run of layers with identical per-tensor t, each `t` a filter list keyed by the
    tensor's name inside its layer; embeddings ride on the first slice, final norm and lm_head on
    the last (mergekit's placement). All tensors must use one of lerp (→ `linear` with weights
    1 − t and t) or slerp. Inputs are cast to fp32 (`dtype: float32`) so mergekit rounds once, to
    `out_dtype`, as spear-mm does. `base_ref` / `adapted_ref` (default: the recipe's) name the
    models in the output; pass resolved folders, since mergekit knows no spear-mm built-ins.
    """
    refs = (base_ref or recipe.base, adapted_ref or recipe.adapted)
    plans = recipe.plan(names, num_layers)
    methods = {
        p.method for p in plans.values() if registry.get(p.method).copy_source(p, False) is None
    }
    if len(methods) > 1 or methods - {"lerp", "slerp"}:
        raise UserError(
            f"{recipe.where}: cannot export to mergekit: it uses "
            f"{', '.join(sorted(methods))}; export writes one mergekit method per merge and "
            "supports recipes that use one of lerp or slerp (a mergekit task-vector recipe "
            "can be given to spear-mm merge directly)"
        )
    method = "linear" if methods == {"lerp"} else "slerp"
    per_layer: list[dict[str, float]] = [{} for _ in range(num_layers)]
    pre: dict[str, float] = {}
    post: dict[str, float] = {}
    for name, plan in plans.items():
        info = classify(name)
        if info.layer is None:
            (pre if info.kind == "embed" else post)[name] = plan.t
        else:
            per_layer[info.layer][name.split(f"layers.{info.layer}.", 1)[1]] = plan.t
    runs: list[tuple[int, int, dict[str, float]]] = []
    for i, table in enumerate(per_layer):
        if runs and runs[-1][2] == table:
            runs[-1] = (runs[-1][0], i + 1, table)
        else:
            runs.append((i, i + 1, table))
    slices = []
    for k, (start, stop, table) in enumerate(runs):
        table = dict(table)
        if k == 0:
            table.update(pre)
        if k == len(runs) - 1:
            table.update(post)
        slices.append(_export_slice(refs, start, stop, table, method))
    doc = {
        "merge_method": method,
        "base_model": refs[0],
        "slices": slices,
        "dtype": "float32",
        "out_dtype": out_dtype,
    }
    if method == "linear":
        del doc["base_model"]
    return yaml.safe_dump(doc, sort_keys=False, default_flow_style=None, width=100)


def _filters(table: dict[str, float], fn) -> list[dict[str, Any]] | float:
    values = {fn(t) for t in table.values()}
    if len(values) == 1:
        return values.pop()
    # Longest names first so that no filter is shadowed by one that is its substring.
    return [
        {"filter": k, "value": fn(v)}
        for k, v in sorted(table.items(), key=lambda kv: (-len(kv[0]), kv[0]))
    ]


def _export_slice(refs, start: int, stop: int, table: dict[str, float], method: str):
    rng = [start, stop]
    if method == "slerp":
        return {
            "sources": [
                {"model": refs[0], "layer_range": rng},
                {"model": refs[1], "layer_range": rng},
            ],
            "parameters": {"t": _filters(table, float)},
        }
    return {
        "sources": [
            {
                "model": refs[0],
                "layer_range": rng,
                "parameters": {"weight": _filters(table, lambda t: 1.0 - t)},
            },
            {
                "model": refs[1],
                "layer_range": rng,
                "parameters": {"weight": _filters(table, float)},
            },
        ]
    }
