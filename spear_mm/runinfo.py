"""What every run writes beside its results: resolved config, versions, git SHA, seeds."""

from __future__ import annotations

import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import spear_mm


def git_sha() -> str | None:
    """SHA of the checkout spear_mm runs from (None when installed from a wheel)."""
    root = Path(spear_mm.__file__).resolve().parent.parent
    try:
        out = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    sha = out.stdout.strip()
    return sha if out.returncode == 0 and sha else None


def versions() -> dict[str, str]:
    """Versions of the packages that decide the numbers."""
    import importlib.metadata as md

    found = {"python": platform.python_version(), "spear_mm": spear_mm.__version__}
    for pkg in ("torch", "transformers", "accelerate", "safetensors", "lm_eval", "hydra-core"):
        try:
            found[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return found


def run_info(seeds: dict | None = None, **extra) -> dict:
    info = {
        "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "argv": sys.argv,
        "git_sha": git_sha(),
        "versions": versions(),
        "seeds": seeds or {},
    }
    info.update(extra)
    return info


def write_run_info(out_dir, cfg=None, seeds: dict | None = None, **extra) -> Path:
    """Write `config.yaml` (resolved) and `run_info.json` into `out_dir`; returns out_dir."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if cfg is not None:
        from omegaconf import OmegaConf

        (out / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    (out / "run_info.json").write_text(json.dumps(run_info(seeds, **extra), indent=2) + "\n")
    return out
