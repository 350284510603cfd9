"""Fixtures for the reliability tests: the real CLI in a subprocess, tiny models, tree hashes.

Helpers are handed out through the `rel` fixture (with --import-mode=importlib a conftest is not
importable). Every subprocess runs offline with `SPEAR_MM_HOME` pointing at a per-session folder,
so the built-in `tiny-llama` is materialized once per test session.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import pytest  # noqa: E402

from spear_mm.testing import make_tiny_llama, perturb_checkpoint  # noqa: E402

SPEAR = [sys.executable, "-m", "spear_mm.cli.main"]


@pytest.fixture(scope="session")
def spear_home(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("spear_home")


@pytest.fixture(scope="session")
def cli_env(spear_home) -> dict:
    """Environment of every CLI subprocess: offline, one thread, a per-session model cache."""
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "OMP_NUM_THREADS": "1",
        "SPEAR_MM_HOME": str(spear_home),
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("SPEAR_MM_DEBUG", None)  # a traceback on stderr is exactly what we test against
    return env


def tree_hash(root: Path) -> dict[str, str]:
    """{relative path: sha256} of every file under `root` (folders as '<dir>')."""
    out: dict[str, str] = {}
    root = Path(root)
    if not root.exists():
        return out
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if path.is_dir():
            out[rel] = "<dir>"
        elif path.is_file():
            out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def temp_leftovers(parent: Path) -> list[str]:
    """Atomic-write leftovers (`.NAME.tmp-PID-…`, `.NAME.old-PID-…`) anywhere under `parent`."""
    return sorted(
        str(p.relative_to(parent))
        for p in Path(parent).rglob(".*")
        if ".tmp-" in p.name or ".old-" in p.name
    )


def run_cli(env: dict, *args, cwd: Path | None = None, timeout: float = 300):
    return subprocess.run(
        [*SPEAR, *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=timeout,
    )


def start_cli(env: dict, *args, cwd: Path | None = None, log: Path | None = None):
    """Start the CLI in the background; stdout+stderr go to `log` (or nowhere)."""
    out = open(log, "w") if log else subprocess.DEVNULL  # noqa: SIM115 - closed by kill_cli
    proc = subprocess.Popen(
        [*SPEAR, *map(str, args)], env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT
    )
    proc._log = out  # type: ignore[attr-defined]
    return proc


def kill_cli(proc) -> int | None:
    """SIGKILL `proc` (if still running); returns its exit code (None when we killed it)."""
    killed = proc.poll() is None
    if killed:
        os.kill(proc.pid, signal.SIGKILL)
    code = proc.wait(timeout=60)
    if getattr(proc, "_log", None) not in (None, subprocess.DEVNULL):
        proc._log.close()
    return None if killed else code


def wait_for(predicate, proc, timeout: float, poll: float = 0.005) -> bool:
    """Poll until `predicate()` holds; False when the process ended or time ran out first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        if proc.poll() is not None:
            return False
        time.sleep(poll)
    return False


@pytest.fixture(scope="session")
def rel():
    return SimpleNamespace(
        tree_hash=tree_hash,
        temp_leftovers=temp_leftovers,
        run_cli=run_cli,
        start_cli=start_cli,
        kill_cli=kill_cli,
        wait_for=wait_for,
    )


@pytest.fixture(scope="session")
def small_pair(tmp_path_factory) -> tuple[Path, Path]:
    """A 2-layer tied fp32 pair (fast) for the bad-input table and the guards."""
    root = tmp_path_factory.mktemp("rel_small")
    base = make_tiny_llama(root / "base", num_layers=2, seed=0)
    adapted = perturb_checkpoint(base, root / "adapted", scale=0.2, seed=1)
    return base, adapted


@pytest.fixture(scope="session")
def sharded_pair(tmp_path_factory) -> tuple[Path, Path]:
    """A 6-layer, hidden-256 pair in many shards: big enough that a merge takes a moment."""
    root = tmp_path_factory.mktemp("rel_sharded")
    base = make_tiny_llama(
        root / "base", num_layers=6, hidden=256, seed=2, max_shard_bytes=1_500_000
    )
    adapted = perturb_checkpoint(
        base, root / "adapted", scale=0.2, seed=3, max_shard_bytes=1_000_000
    )
    return base, adapted
