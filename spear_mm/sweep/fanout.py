"""A sweep's points shared among workers that Hydra's launcher plugins start; one finish step.

    spear-mm sweep -m base=B adapted=A out=runs/sweep workers=2 worker=0,1 hydra/launcher=joblib

Hydra's multirun gives job k the folder `out/k` (its config.yaml and run_info.json). A worker
(`worker=K workers=N`) loads the two models once (`runner.setup`) and scores the points `i` with
`i % N == K` of the one-process order (`runner.planned_points`: adapted, base, replay, then every
family's grid), writing their recipes into `out/worker-K/` and `out/worker-K/shard.json` last
(atomically). The folder is named by the worker, not the job: a failed worker re-run alone is
Hydra's job 0 again, and must not overwrite worker 0's shard. The worker whose shard completes
the set takes a lock on `out`, and — still holding its models — assembles the one-process sweep
in `out`:
points in their one-process order, scores derived again from the base and adapted baselines, the
solver's refinement (`refine_steps` bisects around the target from the grid's points, so it runs
here, one point after another), frontier, verdict, plot, sweep.json / sweep.csv, the selected
recipe. `finish=true workers=N out=...` does the same by hand (a failed or re-run worker).

A point's scores do not depend on which process scored it or after which other point: every
merge is computed afresh from the held base and adapted weights, and the probes are
deterministic, so the assembled sweep.json equals the one-process one (tests/sweep/test_fanout.py)
except for the timings.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import logging
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from spear_mm.errors import UserError
from spear_mm.io.atomic import atomic_write_text
from spear_mm.sweep.points import SweepPoint, derive_scores
from spear_mm.sweep.runner import (
    Sweep,
    _clear_previous,
    evaluate_point,
    planned_points,
    score_replay,
    setup,
)

log = logging.getLogger("spear_mm.sweep")
SHARD = "shard.json"
WORKER_DIR = "worker-{}"
# Keys that may differ between the workers and the finish step: where things go and what the
# finish step does with the points, never how a point is scored.
FINISH_KEYS = (
    *("out", "worker", "workers", "finish", "threads", "materialize", "force", "plot"),
    *("target_retention", "target_recovered", "refine_steps", "axis", "resamples"),
)


def _as_dict(cfg) -> dict:
    """The config as plain data (a DictConfig or the SweepConfig dataclass)."""
    if dataclasses.is_dataclass(cfg):
        return dataclasses.asdict(cfg)
    from omegaconf import OmegaConf

    return OmegaConf.to_container(cfg, resolve=True)


def _finish_config(cfg, root: Path):
    """A copy of `cfg` for the finish step: `out` is the sweep's folder, no worker index."""
    changes = {"out": str(root), "worker": None, "finish": True}
    if dataclasses.is_dataclass(cfg):
        return dataclasses.replace(cfg, **changes)
    from omegaconf import OmegaConf, open_dict

    cfg = OmegaConf.create(OmegaConf.to_container(cfg))
    with open_dict(cfg):
        for key, value in changes.items():
            cfg[key] = value
    return cfg


def points_key(cfg) -> str:
    """Hash of the settings that decide the points and their scores (all but FINISH_KEYS)."""
    data = {k: v for k, v in _as_dict(cfg).items() if k not in FINISH_KEYS}
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


def run_worker(cfg) -> Sweep:
    """Score this worker's share of the points into `out/worker-K/shard.json`, where `out` is
    the parent of the job's folder (`cfg.out`); returns the session."""
    sw = setup(cfg)
    with contextlib.suppress(OSError):
        (sw.out / "recipes").rmdir()  # the job folder keeps only its run records
    sw.out = sw.out.parent / WORKER_DIR.format(cfg.worker)
    _clear_previous(sw.out)
    specs = planned_points(sw)
    rows = []
    for index in range(cfg.worker, len(specs), cfg.workers):
        family, knob, role = specs[index]
        point = score_replay(sw) if family == "replay" else evaluate_point(sw, family, knob, role)
        rows.append({"index": index, "point": dataclasses.asdict(point)})
    scorer = sw.session.scorer
    shard = {
        "version": 1,
        "worker": cfg.worker,
        "workers": cfg.workers,
        "key": points_key(cfg),
        "points": len(specs),
        "doc_meta": scorer.doc_meta,
        "higher_is_better": scorer.higher_is_better,
        "rows": rows,
    }
    atomic_write_text(sw.out / SHARD, json.dumps(shard))
    log.info("worker %d/%d: %d points -> %s", cfg.worker, cfg.workers, len(rows), sw.out / SHARD)
    return sw


def find_shards(root: Path, cfg) -> tuple[list[tuple[Path, dict]], list[int]]:
    """(shards of this sweep under `root/*/`, missing worker indices); UserError on a mismatch."""
    found: dict[int, tuple[Path, dict]] = {}
    key = points_key(cfg)
    for path in sorted(root.glob(f"{WORKER_DIR.format('*')}/{SHARD}")):
        shard = json.loads(path.read_text(encoding="utf-8"))
        if shard.get("workers") != cfg.workers or shard.get("key") != key:
            raise UserError(
                f"{path}: a shard of another sweep (workers={shard.get('workers')}, settings "
                f"{shard.get('key')} vs {key}); run the finish step with the workers' settings, "
                "or remove that folder"
            )
        if shard["worker"] in found:
            raise UserError(
                f"{path} and {found[shard['worker']][0]}: two shards of worker "
                f"{shard['worker']}; remove the older folder"
            )
        found[shard["worker"]] = (path, shard)
    missing = [k for k in range(cfg.workers) if k not in found]
    return [found[k] for k in sorted(found)], missing


@contextlib.contextmanager
def _locked(root: Path) -> Iterator[None]:
    """Exclusive lock on the sweep's folder (a directory flock): one finish step at a time."""
    fd = os.open(root, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def finish_if_complete(cfg, sw: Sweep) -> dict | None:
    """After a worker's shard: assemble the sweep in the parent folder if every shard is there
    and no finish step has assembled this set yet (the last worker to land does it)."""
    root = sw.out.parent
    with _locked(root):
        shards, missing = find_shards(root, cfg)
        if missing:
            log.info("worker %d: waiting for workers %s", cfg.worker, missing)
            return None
        done = root / "sweep.json"
        newest = max(path.stat().st_mtime_ns for path, _ in shards)
        if done.is_file() and done.stat().st_mtime_ns >= newest:
            return None  # another worker finished this set
        return assemble(cfg, root, shards, sw)


def finish(cfg) -> dict:
    """`finish=true`: assemble `out/*/shard.json` into `out` (loads the models for refinement)."""
    root = Path(cfg.out)
    with _locked(root):
        shards, missing = find_shards(root, cfg)
        if missing:
            raise UserError(
                f"sweep finish=true: no shard of worker(s) {missing} under "
                f"{root}/{WORKER_DIR.format('K')}/{SHARD}; "
                f"run them (worker={','.join(map(str, missing))} workers={cfg.workers} with -m)"
            )
        return assemble(cfg, root, shards, None)


def assemble(cfg, root: Path, shards: list[tuple[Path, dict]], sw: Sweep | None) -> dict:
    """The one-process sweep's outputs in `root` from the shards: points, derived scores, then
    `finish.run_solver` (refinement) and `finish.write_outputs`, as `finish.run_sweep` does."""
    from spear_mm.runinfo import write_run_info
    from spear_mm.sweep.finish import run_solver, write_outputs

    cfg = _finish_config(cfg, root)
    if sw is None:
        sw = setup(cfg)
    else:
        sw.cfg, sw.out = cfg, root
        _clear_previous(root)
    write_run_info(root, cfg, {"seed": cfg.seed})
    rows = sorted(
        (row["index"], path.parent, row["point"]) for path, s in shards for row in s["rows"]
    )
    if [i for i, _, _ in rows] != list(range(shards[0][1]["points"])):
        raise UserError(f"{root}: the shards do not cover every point once; re-run the workers")
    sw.points = []
    for _, folder, fields in rows:
        point = SweepPoint(**fields)
        if point.recipe:
            shutil.copyfile(folder / point.recipe, root / point.recipe)
        sw.points.append(point)
    scorer = sw.session.scorer
    for _, shard in shards:
        scorer.doc_meta.update(shard["doc_meta"])
        scorer.higher_is_better.update(shard["higher_is_better"])
    base, adapted = sw.by_family("base"), sw.by_family("adapted")
    for point in sw.points:
        point.scores, point.reasons = derive_scores(
            point.raw, base.raw, adapted.raw, scorer.higher_is_better
        )
    sol = run_solver(sw)
    log.info("assembled %d shards -> %s", len(shards), root / "sweep.json")
    return write_outputs(sw, sol)
