"""Named suites and the bundled lm-eval task YAMLs, rendered with absolute data paths.

A *suite* is a named list of lm-eval task names, defined once in `spear_mm/conf/suite/<name>.yaml`
(the Hydra group `suite=` reads the same files). The task YAMLs that ship with spear_mm live in
`spear_mm/eval/tasks/` as templates: lm-eval resolves a relative `data_files` path against the
current directory, so `render_tasks` writes a copy whose paths are absolute, plus the
bits-per-byte documents taken from the bundled held-out corpora.

`data_files={task: path}` points any bundled task at a local JSON-lines file instead of its
dataset (the same prompt, choices, target and metrics): how the online finance pack is tested
offline, and how an offline user supplies a copy of a public dataset.

Stdlib + yaml (plus `eval.config.SuiteConfig` for the defaults a suite file leaves out); lm-eval is
never imported here.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

import yaml

from spear_mm.errors import UserError

TASKS_DIR = Path(__file__).resolve().parent / "tasks"
DATA_DIR = TASKS_DIR / "data"
SUITE_DIR = Path(__file__).resolve().parent.parent / "conf" / "suite"
PLACEHOLDER = "__SPEAR_TASK_DATA__"

# Kept in step with scripts/build_mc_suites.py (tests check the bundled manifest against both).
FINANCE_SUBJECTS = (
    "professional_accounting",
    "econometrics",
    "high_school_macroeconomics",
    "high_school_microeconomics",
)
EXCLUDED_FROM_GENERAL = (*FINANCE_SUBJECTS, "business_ethics", "management", "marketing")

# Bits-per-byte tasks and the probe whose texts they score.
PPL_TASKS = {"spear_general_ppl": "general", "spear_finance_ppl": "finance"}


def bundled_tasks() -> list[str]:
    """Names of the task YAMLs shipped in spear_mm/eval/tasks (sorted)."""
    return sorted(p.stem for p in TASKS_DIR.glob("*.yaml"))


def suite_names() -> list[str]:
    return sorted(p.stem for p in SUITE_DIR.glob("*.yaml"))


def load_suite(name: str) -> dict:
    """{'tasks': [...], 'description': str, 'offline': bool} of suite `name`."""
    path = SUITE_DIR / f"{name}.yaml"
    if not path.is_file():
        raise UserError(
            f"suite '{name}' in spear_mm/conf/suite: unknown; choose one of "
            f"{', '.join(suite_names())} or give lm-eval task names with tasks=[...]"
        )
    body = yaml.safe_load(path.read_text()) or {}
    if name not in body or not isinstance(body[name].get("tasks"), list):
        raise UserError(f"suite file {path}: expected a top-level '{name}:' with a 'tasks' list")
    from spear_mm.eval.config import SuiteConfig  # the defaults the file does not restate

    return {**dataclasses.asdict(SuiteConfig()), **body[name]}


def expand(names: Iterable[str]) -> list[str]:
    """Task names for a mix of suite and task names, suites expanded, duplicates dropped."""
    out: list[str] = []
    known = set(suite_names())
    for name in names:
        for task in load_suite(name)["tasks"] if name in known else [name]:
            if task not in out:
                out.append(str(task))
    return out


def _read_template(task: str) -> str:
    return (TASKS_DIR / f"{task}.yaml").read_text(encoding="utf-8")


def ppl_documents(task: str) -> list[str]:
    """The documents a bits-per-byte task scores, in order: the probe's **test-role** texts
    (spear_mm.io.roles) — what a stated number may be measured on."""
    from spear_mm.eval.probe import probe_texts

    return probe_texts(PPL_TASKS[task], role="test")


def _jsonl(texts: list[str]) -> str:
    return "".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in texts)


def _point_at_file(template: str, task: str, path: str) -> str:
    """The task YAML with its dataset replaced by the JSON-lines file `path` (same split)."""
    cfg = yaml.safe_load(template)
    split = cfg.get("test_split", "test")
    cfg["dataset_path"] = "json"
    cfg.pop("dataset_name", None)
    cfg["dataset_kwargs"] = {"data_files": {split: str(Path(path).absolute())}}
    return yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True)


def _check_overrides(data_files: Mapping[str, str]) -> None:
    """Every override names a bundled task and a readable JSON-lines file with ≥ 1 record."""
    for task, path in data_files.items():
        if task not in bundled_tasks():
            raise UserError(
                f"data_files.{task}: '{task}' is not a bundled task; "
                f"choose one of {', '.join(bundled_tasks())}"
            )
        if not Path(path).is_file():
            raise UserError(f"data_files.{task}: file {path} not found; give a JSON-lines file")
        _check_jsonl(task, Path(path))


def _check_jsonl(task: str, path: Path) -> None:
    fix = "give a UTF-8 JSON-lines file, one JSON object per line"
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"data_files.{task}: cannot read {path} ({exc}); {fix}") from None
    records = 0
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            record = None
        if not isinstance(record, dict):
            raise UserError(f"data_files.{task}: {path} line {number} is not a JSON object; {fix}")
        records += any(str(v).strip() for v in record.values() if v is not None)
    if records == 0:  # an empty text scores 0 bytes: a division by zero downstream
        raise UserError(f"data_files.{task}: {path} has no non-empty record; {fix}")


check_data_files = _check_overrides  # public: the harness checks before loading anything


def task_digest(task: str, data_files: Mapping[str, str] | None = None) -> str:
    """Hash of everything that defines a bundled task's numbers: YAML, data, overrides.

    Non-bundled (lm-eval) tasks hash to their name: lm-eval's own version decides those and
    is recorded in the results.
    """
    if task not in bundled_tasks():
        return hashlib.sha256(f"lm-eval:{task}".encode()).hexdigest()[:16]
    h = hashlib.sha256(_read_template(task).encode())
    override = (data_files or {}).get(task)
    if override:
        h.update(Path(override).read_bytes())
    elif task in PPL_TASKS:
        h.update(_jsonl(ppl_documents(task)).encode())
    else:
        for name in sorted(os.listdir(DATA_DIR)):
            if name.startswith(task.removeprefix("spear_")):
                h.update((DATA_DIR / name).read_bytes())
    return h.hexdigest()[:16]


def folder_digest(folders: Iterable[str | os.PathLike]) -> str:
    """Hash of every file (relative name and bytes) under the user's lm-eval task folders."""
    h = hashlib.sha256()
    for folder in folders:
        root = Path(folder)
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            h.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes())
    return h.hexdigest()[:16]


def render_tasks(
    dest: str | os.PathLike, tasks: Iterable[str], data_files: Mapping[str, str] | None = None
) -> Path:
    """Write the bundled tasks among `tasks` into `dest` (an lm-eval include path); returns it.

    Only bundled tasks are written (lm-eval's own tasks need nothing). Bits-per-byte documents
    go to `dest/data/`. Writing is idempotent: the same inputs give the same files.
    """
    data_files = dict(data_files or {})
    _check_overrides(data_files)
    dest = Path(dest).absolute()
    (dest / "data").mkdir(parents=True, exist_ok=True)
    for task in tasks:
        if task not in bundled_tasks():
            continue
        text = _read_template(task)
        if task in data_files:
            text = _point_at_file(text, task, data_files[task])
        elif task in PPL_TASKS:
            docs = dest / "data" / f"{task.removeprefix('spear_')}.jsonl"
            _write_if_changed(docs, _jsonl(ppl_documents(task)))
            text = text.replace(PLACEHOLDER, str(dest / "data"))
        else:
            text = text.replace(PLACEHOLDER, str(DATA_DIR))
        _write_if_changed(dest / f"{task}.yaml", text)
    return dest


def _write_if_changed(path: Path, text: str) -> None:
    # Rewriting identical files would change their mtime and make `datasets` rebuild its cache.
    if path.is_file() and path.read_text(encoding="utf-8") == text:
        return
    from spear_mm.io.atomic import atomic_write_text

    atomic_write_text(path, text)
