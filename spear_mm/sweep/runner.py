"""`spear-mm sweep`: baselines, the knob grid of every family, solver, frontier, outputs.

Reads top to bottom: `setup` (models, ranking, probes) → `baselines` (adapted, base, replay) →
`grid` (every family at every interior knob) → `solve` (bisection around the target) →
`finish` (frontier, verdict, plot, sweep.csv / sweep.json, selected_recipe.yaml, materialize).
Every point is written as a recipe file first and that file is what gets merged, in memory.
"""

from __future__ import annotations

import json
import logging
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from spear_mm.errors import UserError
from spear_mm.io.atomic import atomic_write_text
from spear_mm.io.checkpoint import CheckpointReader, parse_dtype
from spear_mm.merge.recipe import load_recipe
from spear_mm.sweep import recipes
from spear_mm.sweep.config import SweepConfig
from spear_mm.sweep.evaluate import (
    Scorer,
    SweepSession,
    checked_backend,
    make_probes,
    score_folder,
    suite_tasks,
    sweep_device,
)
from spear_mm.sweep.points import SweepPoint, derive_scores
from spear_mm.sweep.ranking import LayerRanking, inert_last, load_ranking, unchanged_layers
from spear_mm.sweep.schedule import make_schedule

log = logging.getLogger("spear_mm.sweep")
RANKED = ("analyzer", "topk")


@dataclass
class Sweep:
    """Everything one sweep run holds: config, folders, the live session and the points."""

    cfg: SweepConfig
    out: Path
    base_dir: Path
    adapted_dir: Path
    session: SweepSession
    ranking: LayerRanking | None
    families: list[str]
    points: list[SweepPoint] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    inert: tuple[int, ...] = ()  # layers identical in base and adapted (analyzer: never restored)
    calibration: dict | None = None  # calibration-role probes, built for the learned family

    @property
    def num_layers(self) -> int:
        return self.session.num_layers

    def by_family(self, family: str) -> SweepPoint:
        return next(p for p in self.points if p.family == family)


def setup(cfg: SweepConfig) -> Sweep:
    """Resolve the models, read the ranking, load the model once and build the probes."""
    from spear_mm.io.archmap import num_layers
    from spear_mm.io.sources import resolve_model

    random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    base_dir = resolve_model(cfg.base).absolute()
    adapted_dir = resolve_model(cfg.adapted).absolute()
    with CheckpointReader(adapted_dir) as reader, CheckpointReader(base_dir) as base_reader:
        layers, base_layers = num_layers(reader.config), num_layers(base_reader.config)
    if base_layers != layers:  # extra base layers would be silently ignored by the merge
        raise UserError(
            f"layers in base {base_dir} and adapted {adapted_dir}: {base_layers} vs {layers}; "
            "sweep needs a base and its own continued-pretraining checkpoint (same architecture)"
        )
    ranking = load_ranking(cfg.analysis, layers) if cfg.analysis else None
    families, notes = list(cfg.families), []
    if ranking is None and any(f in RANKED for f in families):
        dropped = [f for f in families if f in RANKED]
        families = [f for f in families if f not in RANKED]
        notes.append(f"no analysis given: skipped {', '.join(dropped)} (they need a layer ranking)")
    if "uniform" not in families:
        families.insert(0, "uniform")
        notes.append("uniform added: it is the line every other family is compared with")
    scorer = Scorer(make_probes(cfg.probe), suite_tasks(cfg.suite), cfg.suite_limit)
    scorer.backend = checked_backend(cfg, scorer.tasks)
    device = sweep_device(cfg)  # both checked before the models are read
    session = SweepSession.open(base_dir, adapted_dir, scorer, parse_dtype(cfg.dtype))
    session.to(device)
    inert = unchanged_layers(session.merger.base_state, session.merger.adapted_state, layers)
    ranking = inert_last(ranking, inert, notes) if ranking else None
    out = Path(cfg.out)
    _clear_previous(out)
    return Sweep(
        cfg, out, base_dir, adapted_dir, session, ranking, families, notes=notes, inert=inert
    )


def _clear_previous(out: Path) -> None:
    """Remove a previous sweep's recipes, learned fits and selection from `out` (the sweep owns
    them), so no stale file outlives the run that wrote it; sweep.json is replaced at the end."""
    recipes_dir = out / "recipes"
    recipes_dir.mkdir(parents=True, exist_ok=True)
    for old in [*recipes_dir.glob("*.yaml"), *(out / "learned").glob("*.json")]:
        old.unlink()
    (out / "selected_recipe.yaml").unlink(missing_ok=True)


def recipe_name(family: str, knob: float, role: str) -> str:
    if role == "baseline":
        return f"{family}.yaml"
    return recipes.point_filename(family, knob)


def evaluate_point(sw: Sweep, family: str, knob: float, role: str) -> SweepPoint:
    """Write the recipe of (family, knob), merge it in memory, score it."""
    cfg = sw.cfg
    kind = "uniform" if role == "baseline" else family
    order = list(sw.ranking.order) if sw.ranking else None
    fit_s = 0.0
    if kind == "learned":
        t0 = time.perf_counter()
        sched = learned_point(sw, knob)
        fit_s = time.perf_counter() - t0
    else:
        sched = make_schedule(
            kind,
            knob,
            sw.num_layers,
            order,
            spread=cfg.gamma_spread,
            nonlayer=cfg.nonlayer,
            inert=sw.inert,
            kind_gamma=cfg.kind_gamma,
            kind_depth_spread=cfg.kind_depth_spread,
        )
    data = recipes.recipe_dict(sched, sw.base_dir, sw.adapted_dir, cfg.method)
    rel = f"recipes/{recipe_name(family, knob, role)}"
    atomic_write_text(sw.out / rel, recipes.recipe_yaml(sched, data))
    recipe = load_recipe(sw.out / rel)  # the merge package validates and plans the file
    raw, merge_s, eval_s = sw.session.evaluate(recipe)
    plan = recipe.plan(sw.session.merger.names, sw.num_layers)
    layer_t, nonlayer_t = _plan_t(plan, sw.num_layers)
    point = SweepPoint(
        family,
        float(knob),
        role,
        raw,
        rel,
        merge_s=merge_s + fit_s,
        eval_s=eval_s,
        layer_t=layer_t,
        nonlayer_t=nonlayer_t,
        docs={k: list(v) for k, v in sw.session.scorer.last_docs.items()},
    )
    log.info(
        "%s: general %.4f finance %.4f bpb (merge %.2fs, eval %.2fs)",
        point.label,
        raw["general_bpb"],
        raw["finance_bpb"],
        merge_s,
        eval_s,
    )
    _score(sw, point)
    return point


def learned_point(sw: Sweep, knob: float):
    """Fit the learned family's point at `knob` on the calibration-role probes (built once,
    with the sweep's probe settings); the fit's record goes to out/learned/<knob>.json."""
    from spear_mm.sweep.learned import learned_schedule

    if sw.calibration is None:
        sw.calibration = make_probes(sw.cfg.probe, role="calibration")
    sched, record = learned_schedule(
        sw.session.merger, sw.calibration, sw.session.tokenizer, knob, sw.cfg.learn, progress=True
    )
    if record.get("fitted"):
        rel = Path("learned") / recipes.point_filename("learned", knob).replace(".yaml", ".json")
        (sw.out / rel).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(sw.out / rel, json.dumps(record, indent=1) + "\n")
        last = record["trace"][-1]
        log.info("learned@%.3g: fitted in %d steps, objective %.4f, general excess %+.4f nats",
                 knob, len(record["trace"]), last["objective"], last["excess"])  # fmt: skip
    return sched


def _plan_t(plan: dict, num_layers: int) -> tuple[list[float], float | None]:
    """Per-layer t read back from the recipe's plan (what was really merged)."""
    from spear_mm.io.archmap import classify

    layer_t: list[float] = [float("nan")] * num_layers
    other = None
    for name, tp in plan.items():
        layer = classify(name).layer
        if layer is None:
            other = tp.t
        else:
            layer_t[layer] = tp.t
    return layer_t, other


def _score(sw: Sweep, point: SweepPoint) -> None:
    if not any(p.family == "base" for p in sw.points) or point.family in ("adapted", "base"):
        return  # baselines are scored once both exist (see `baselines`)
    base, adapted = sw.by_family("base"), sw.by_family("adapted")
    point.scores, point.reasons = derive_scores(
        point.raw, base.raw, adapted.raw, sw.session.scorer.higher_is_better
    )


def baselines(sw: Sweep) -> None:
    """Adapted (knob 0) and base (knob 1) through recipes, then the replay checkpoint if given."""
    sw.points.append(evaluate_point(sw, "adapted", 0.0, "baseline"))
    sw.points.append(evaluate_point(sw, "base", 1.0, "baseline"))
    base, adapted = sw.by_family("base"), sw.by_family("adapted")
    for p in (adapted, base):
        p.scores, p.reasons = derive_scores(
            p.raw, base.raw, adapted.raw, sw.session.scorer.higher_is_better
        )
    if sw.cfg.replay:
        sw.points.append(score_replay(sw))


def score_replay(sw: Sweep) -> SweepPoint:
    """The replay-trained checkpoint, scored on the same probes (not a recipe)."""
    from spear_mm.io.sources import resolve_model

    raw, eval_s = score_folder(
        resolve_model(sw.cfg.replay), sw.session.scorer, parse_dtype(sw.cfg.dtype)
    )
    docs = {k: list(v) for k, v in sw.session.scorer.last_docs.items()}
    replay = SweepPoint("replay", None, "baseline", raw, None, eval_s=eval_s, docs=docs)
    _score(sw, replay)
    return replay


def grid_knobs(cfg) -> list[float]:
    """The grid's knobs: strictly between 0 and 1 (the ends are the baselines), sorted."""
    return sorted({float(k) for k in cfg.knobs if 0.0 < float(k) < 1.0})


def grid(sw: Sweep) -> None:
    """Every family at every knob strictly between 0 and 1 (the ends are the baselines)."""
    for family in sw.families:
        for knob in grid_knobs(sw.cfg):
            sw.points.append(evaluate_point(sw, family, knob, "grid"))


def planned_points(sw: Sweep) -> list[tuple[str, float | None, str]]:
    """(family, knob, role) of every point `baselines` and `grid` evaluate, in their order:
    what a fanned-out sweep shares among its workers (spear_mm.sweep.fanout)."""
    specs: list[tuple[str, float | None, str]] = [("adapted", 0.0, "baseline")]
    specs.append(("base", 1.0, "baseline"))
    if sw.cfg.replay:
        specs.append(("replay", None, "baseline"))
    return specs + [(f, k, "grid") for f in sw.families for k in grid_knobs(sw.cfg)]


def snap(sw: Sweep):
    """Knob → the nearest knob the family can express (topk moves in steps of 1/L)."""

    def _snap(family: str, knob: float) -> float:
        if family == "topk":
            return round(knob * sw.num_layers) / sw.num_layers
        return float(round(knob, 6))

    return _snap
