"""Per-task result cache keyed by model fingerprint, task and the settings that change numbers.

Layout: `<root>/<model fingerprint>/<task>.<key>.json`, one small JSON file per (model, task,
settings); `key` hashes the task definition digest, limit, seed, max_length, dtype and the
tokenizer fingerprint. Files are written atomically, so a killed run never leaves a half entry;
an unreadable entry counts as a miss and is overwritten.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from spear_mm.io.atomic import atomic_write_text


def cache_key(**parts) -> str:
    """Stable hash of the keyword parts (JSON with sorted keys)."""
    blob = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _safe(task: str) -> str:
    # Task names may contain characters a file name should not (e.g. "/" in some lm-eval tags).
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in task)


class ResultCache:
    """Read and write cached per-task results under `root` (created on first write)."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    def path(self, model_fp: str, task: str, key: str) -> Path:
        return self.root / model_fp / f"{_safe(task)}.{key}.json"

    def get(self, model_fp: str, task: str, key: str) -> dict | None:
        path = self.path(model_fp, task, key)
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    def put(self, model_fp: str, task: str, key: str, entry: dict) -> Path:
        path = self.path(model_fp, task, key)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(entry, indent=2, sort_keys=True, default=str) + "\n")
        return path
