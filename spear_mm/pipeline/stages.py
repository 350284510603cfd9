"""Cached pipeline stages: each stage's output folder is keyed by its inputs and config.

A stage finishes by writing `stage.json` (its key, summary and cost) last. A re-run with the same
key reuses the folder and says so; a different key (changed config or a changed upstream stage)
recomputes it and, through the keys, everything downstream. A stage killed half-way has no
`stage.json`: atomic stages are redone from scratch (their temp folder is swept away), resumable
ones (training) are re-entered with the same folder so they continue from their last checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from spear_mm.io.atomic import atomic_dir, atomic_write_text

MARKER = "stage.json"


def stage_key(payload) -> str:
    """Stable hash of a JSON-able payload (config section + upstream keys + input fingerprints)."""
    text = json.dumps(payload, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass
class Stage:
    """One step of the study. `run(folder)` writes into `folder` and returns a JSON-able summary."""

    name: str
    payload: dict
    run: Callable[[Path], dict]
    resumable: bool = False
    key: str = field(init=False)

    def __post_init__(self) -> None:
        self.key = stage_key(self.payload)


def read_marker(folder: Path) -> dict | None:
    try:
        return json.loads((folder / MARKER).read_text())
    except (OSError, json.JSONDecodeError):
        return None


def run_stage(run_dir: Path, stage: Stage, log: Callable[[str], None] = print) -> dict:
    """Run `stage` unless `run_dir/<name>` already holds its result for the same key."""
    folder = Path(run_dir) / stage.name
    marker = read_marker(folder)
    if marker and marker.get("key") == stage.key:
        log(f"[{stage.name}] cached (key {stage.key}), reusing {folder}")
        return {**marker, "cached": True}
    if marker and "payload" in marker:
        changed = _changed_keys(
            marker["payload"], json.loads(json.dumps(stage.payload, default=str))
        )
        log(f"[{stage.name}] inputs changed ({', '.join(changed) or 'code'}), recomputing")
    start = time.perf_counter()
    if stage.resumable:
        summary = _run_in_place(folder, stage, log)
    else:
        log(f"[{stage.name}] running")
        with atomic_dir(folder, force=True) as tmp:
            summary = stage.run(tmp)
            marker = _marker(stage, summary, time.perf_counter() - start)
            (tmp / MARKER).write_text(json.dumps(marker, indent=2) + "\n")
        log(f"[{stage.name}] done in {marker['seconds']:.0f} s")
        return {**marker, "cached": False}
    marker = _marker(stage, summary, time.perf_counter() - start)
    atomic_write_text(folder / MARKER, json.dumps(marker, indent=2) + "\n")
    log(f"[{stage.name}] done in {marker['seconds']:.0f} s")
    return {**marker, "cached": False}


def _run_in_place(folder: Path, stage: Stage, log) -> dict:
    key_file = folder / "stage_key.txt"
    if folder.exists():
        old = key_file.read_text().strip() if key_file.exists() else None
        if old != stage.key:
            log(f"[{stage.name}] inputs changed, starting over")
            shutil.rmtree(folder)
        else:
            log(f"[{stage.name}] resuming unfinished stage in {folder}")
    folder.mkdir(parents=True, exist_ok=True)
    if not key_file.exists():
        atomic_write_text(key_file, stage.key + "\n")
    if not (folder / MARKER).exists():
        log(f"[{stage.name}] running")
    return stage.run(folder)


def _marker(stage: Stage, summary: dict, seconds: float) -> dict:
    return {
        "stage": stage.name,
        "key": stage.key,
        "seconds": round(seconds, 2),
        "summary": summary,
        "payload": json.loads(json.dumps(stage.payload, default=str)),
    }


def _changed_keys(old, new, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two payloads (for the log line)."""
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[str] = []
        for key in sorted(set(old) | set(new)):
            out += _changed_keys(old.get(key), new.get(key), f"{prefix}{key}.")
        return out
    return [] if old == new else [prefix.rstrip(".")]
