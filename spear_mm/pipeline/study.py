"""`spear-mm run`: CPT → analyze → sweep (+ solve + materialize) → compare → report.

Each stage is cached in the run folder, keyed by its config section and the keys of the stages it
reads (spear_mm.pipeline.stages): a re-run reuses what is finished, a changed target recomputes
only the sweep and what follows, and a changed training config recomputes everything.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from pathlib import Path

from spear_mm.io.sources import resolve_model
from spear_mm.pipeline.config import RunConfig
from spear_mm.pipeline.document import SCHEMA_VERSION as COMPARE_DOC
from spear_mm.pipeline.document import replay_id
from spear_mm.pipeline.stages import Stage, run_stage
from spear_mm.sweep.document import SCHEMA_VERSION as SWEEP_DOC


def _log(msg: str) -> None:
    print(f"spear-mm run: {msg}", flush=True)


def _section(cfg: RunConfig, key: str) -> dict:
    """A section of the run config as plain data: the stage's cache key payload."""
    return dataclasses.asdict(getattr(cfg, key))


def _digest(path) -> str | None:
    """sha256 of a file named by the config (None when unset or unreadable: the stage says why)."""
    if not path:
        return None
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError:
        return None


def _heldout_digest(cfg: RunConfig) -> dict | None:
    """sha256 of the user's own held-out files: editing one in place recomputes every stage that
    scored on it (training corpora are keyed by path, as the train stage keys them). None with
    the bundled corpora."""
    specs = [s for s in (cfg.heldout.general, cfg.heldout.finance) if Path(s).exists()]
    if not specs:
        return None
    out = {}
    for spec in specs:
        path = Path(spec)
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        digest = hashlib.sha256()
        for f in files:
            digest.update(f.relative_to(path).as_posix().encode() if path.is_dir() else b"")
            digest.update(f.read_bytes())
        out[spec] = digest.hexdigest()
    return out


def _stage_cfg(section, **fill):
    """The section (the stage's own typed config) with the pipeline's paths filled in; the
    stage's value checks run again (`dataclasses.replace` calls `__post_init__`)."""
    return dataclasses.replace(section, **{k: str(v) for k, v in fill.items()})


def train_config(cfg: RunConfig, folder: Path):
    """The train stage's TrainConfig: the study's model / data / trainer sections and seed."""
    from spear_mm.train.config import TrainConfig

    return TrainConfig(model=cfg.model, data=cfg.data, trainer=cfg.trainer, seed=cfg.seed,
                       out=str(folder), resume="auto")  # fmt: skip


def train_stage(cfg: RunConfig, run_dir: Path, replay: float | None = None) -> Stage:
    """The CPT; with `replay`, the replay baseline: the same CPT with that share of general
    tokens (stage folder `replay_<percent>`)."""
    name = "train"
    if replay is not None:
        cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, replay_ratio=replay))
        name = replay_id(replay)
    payload = {k: _section(cfg, k) for k in ("model", "data", "trainer")} | {"seed": cfg.seed}

    def run(folder: Path) -> dict:
        from spear_mm.train.loop import run_training

        last = run_training(train_config(cfg, folder))
        return {"adapted": str(folder / "final"), "last_metrics": _jsonable(last)}

    return Stage(name, payload, run, resumable=True)


def analyze_stage(cfg: RunConfig, base: Path, adapted: Path, upstream: str) -> Stage:
    payload = {"analyze": _section(cfg, "analyze"), "base": str(base), "train": upstream}
    files = {k: _digest(payload["analyze"].get(k)) for k in ("score_spec", "prior")}
    if any(files.values()):  # a file edited in place must recompute the stage
        payload["files"] = files
    if heldout := _heldout_digest(cfg):
        payload["heldout_files"] = heldout
    from spear_mm.analyze.validate import DEFAULT_WEIGHTS, SCORE_SCALE

    payload["score_scale"] = SCORE_SCALE  # a new way of combining features recomputes the stage
    if not payload["analyze"].get("score_spec"):  # a new shipped default recomputes it too
        payload["default_score"] = dict(DEFAULT_WEIGHTS)

    def run(folder: Path) -> dict:
        from spear_mm.analyze.run import analyze

        acfg = _stage_cfg(cfg.analyze, base=base, adapted=adapted, out=folder)
        doc = analyze(acfg)
        return {"layer_ranking": doc.get("layer_ranking")}

    return Stage("analyze", payload, run)


def _payload(cfg: RunConfig, section: str, base: Path, upstream: list[str], doc: int) -> dict:
    """A stage's cache key inputs: its config section, the base, the upstream stage keys and the
    schema version of the document it writes (a new layout recomputes the stage, so no reader
    meets a cached file of an older version)."""
    payload = {section: _section(cfg, section), "base": str(base), "upstream": upstream, "doc": doc}
    if heldout := _heldout_digest(cfg):
        payload["heldout_files"] = heldout
    return payload


def sweep_stage(cfg: RunConfig, base: Path, adapted: Path, analysis: Path, up: list[str]) -> Stage:
    def run(folder: Path) -> dict:
        from spear_mm.sweep.finish import run_sweep

        scfg = _stage_cfg(cfg.sweep, base=base, adapted=adapted, out=folder, analysis=analysis)
        doc = run_sweep(scfg)
        return {"solver": _jsonable(doc.get("solver")), "verdict": _jsonable(doc.get("verdict"))}

    return Stage("sweep", _payload(cfg, "sweep", base, up, SWEEP_DOC), run)


def compare_stage(
    cfg: RunConfig,
    base: Path,
    adapted: Path,
    run_dir: Path,
    up: list[str],
    replays: dict[float, Path] | None = None,
) -> Stage:
    def run(folder: Path) -> dict:
        from spear_mm.pipeline.compare import compare_models

        return compare_models(cfg.compare, base, adapted, run_dir, folder, replays or {})

    return Stage("compare", _payload(cfg, "compare", base, up, COMPARE_DOC), run)


def _jsonable(obj):
    import json

    return json.loads(json.dumps(obj, default=str))


def run_study(cfg: RunConfig) -> int:
    """Run every stage of the study for a validated RunConfig; writes the report. With
    `seeds=[...]`, one study per seed and a cross-seed summary (spear_mm.pipeline.seeds)."""
    if cfg.seeds:
        from spear_mm.pipeline.seeds import run_seeds

        return run_seeds(cfg, run_study)
    run_dir = Path(cfg.out).absolute()
    run_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    base = resolve_model(cfg.model.name).absolute()
    markers = []

    train = run_stage(run_dir, train_stage(cfg, run_dir), _log)
    markers.append(train)
    adapted = Path(train["summary"]["adapted"])
    analysis = run_stage(run_dir, analyze_stage(cfg, base, adapted, train["key"]), _log)
    markers.append(analysis)
    keys = [train["key"], analysis["key"]]
    analysis_file = run_dir / "analyze" / "analysis.json"
    sweep = run_stage(run_dir, sweep_stage(cfg, base, adapted, analysis_file, keys), _log)
    markers.append(sweep)
    keys.append(sweep["key"])
    replays = {}
    for ratio in cfg.replay:  # the replay baselines: CPT runs of their own
        marker = run_stage(run_dir, train_stage(cfg, run_dir, replay=ratio), _log)
        markers.append(marker)
        keys.append(marker["key"])
        replays[ratio] = Path(marker["summary"]["adapted"])
    compare = run_stage(run_dir, compare_stage(cfg, base, adapted, run_dir, keys, replays), _log)
    markers.append(compare)

    from spear_mm.pipeline.findings import build_report
    from spear_mm.pipeline.report import write_report

    rep = build_report(cfg, run_dir, markers, fresh_seconds=time.perf_counter() - t0)
    md, page = write_report(rep, run_dir)
    _log(f"report: {md} ({page})")
    for line in rep.findings:
        _log(f"- {line}")
    return 0
