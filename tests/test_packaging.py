"""The package as users install it: build the wheel, install it into a fresh virtualenv, and run
every verb from a folder outside the checkout (`pip install -e` hides missing packages and data).

The fresh venv gets only the wheel (`--no-deps --no-index`: offline); the pinned third-party
stack comes from this test's own environment through a `.pth` line, so the test costs seconds
instead of a 2-minute reinstall of torch & co. What it checks is what the editable install
cannot: that every module, config, task file, corpus and accelerate config is inside the wheel.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import textwrap
import zipfile
from pathlib import Path

import pytest

from spear_mm.testing import write_pseudo_corpus

ROOT = Path(__file__).resolve().parents[1]
VERBS = ("train", "analyze", "merge", "eval", "sweep", "run")
pytestmark = pytest.mark.slow


def _sh(cmd, **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=300, **kw)
    assert proc.returncode == 0, f"{cmd}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return proc


def _source_tree(dest: Path) -> Path:
    """Copy of the checkout's files as a clean clone has them (tracked + untracked, not ignored)."""
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"],
        cwd=ROOT, capture_output=True, text=True,
    )  # fmt: skip
    if listed.returncode != 0:
        pytest.skip("not a git checkout: cannot tell source files from build output")
    for rel in filter(None, listed.stdout.split("\0")):
        src = ROOT / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    return dest


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("wheel")
    src = _source_tree(root / "src")
    dist = root / "dist"
    _sh([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
         "--no-index", "-w", dist, src])  # fmt: skip
    (wheel,) = dist.glob("spear_mm-*.whl")
    venv = root / "venv"
    _sh([sys.executable, "-m", "venv", venv])
    purelib = Path(
        _sh(
            [
                venv / "bin" / "python",
                "-c",
                "import sysconfig; print(sysconfig.get_path('purelib'))",
            ]
        ).stdout.strip()
    )
    (purelib / "zz_stack.pth").write_text(sysconfig.get_path("purelib") + "\n")
    _sh([venv / "bin" / "python", "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
         "--disable-pip-version-check", wheel])  # fmt: skip
    work = root / "elsewhere"  # not the checkout: nothing may be found through the cwd
    work.mkdir()
    env = {
        **os.environ,
        "SPEAR_MM_HOME": str(root / "home"),
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "PYTHONPATH": "",
    }
    return {"bin": venv / "bin", "wheel": wheel, "cwd": work, "env": env, "purelib": purelib}


def _cli(installed, *args) -> subprocess.CompletedProcess:
    return _sh([installed["bin"] / "spear-mm", *args], cwd=installed["cwd"], env=installed["env"])


def test_wheel_holds_every_package_and_data_file(installed):
    names = set(zipfile.ZipFile(installed["wheel"]).namelist())
    for pkg in ("io", "train", "analyze", "merge", "eval", "sweep", "pipeline", "cli"):
        assert f"spear_mm/{pkg}/__init__.py" in names, pkg
    expected = {p.relative_to(ROOT).as_posix() for p in (ROOT / "spear_mm").rglob("*")}
    expected = {n for n in expected if Path(n).suffix in (".py", ".yaml", ".gz", ".jsonl")}
    assert expected <= names, sorted(expected - names)[:10]


def test_installed_package_is_the_wheel_not_the_checkout(installed):
    proc = _sh(
        [installed["bin"] / "python", "-c", "import spear_mm.train.loop as m; print(m.__file__)"],
        cwd=installed["cwd"], env=installed["env"],
    )  # fmt: skip
    assert Path(proc.stdout.strip()).is_relative_to(installed["purelib"])


@pytest.mark.parametrize("verb", VERBS)
def test_every_verb_help_runs_from_the_wheel(installed, verb):
    assert "usage: spear-mm" in _cli(installed, verb, "--help").stdout


def test_accelerate_configs_ship_with_the_wheel(installed):
    path = Path(_cli(installed, "train", "--accelerate-config", "fsdp").stdout.strip())
    assert path.is_file() and path.is_relative_to(installed["purelib"])
    assert "distributed_type: FSDP" in path.read_text()


def test_train_merge_eval_from_the_wheel(installed, tmp_path):
    corpus = write_pseudo_corpus(tmp_path / "fin.jsonl", 30, seed=1, prefix="fin")
    out = tmp_path / "cpt"
    _cli(installed, "train", "model=tiny-llama", f"data.domain={corpus}", "data.general=null",
         "data.seq_len=32", "data.val_max_blocks=2", "trainer.max_steps=2", "trainer.batch_size=2",
         "trainer.progress=false", f"out={out}")  # fmt: skip
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["step"] == 2
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        textwrap.dedent(
            f"""\
            base: tiny-llama
            adapted: {out / "final"}
            method: lerp
            default: 0.5
            """
        )
    )
    _cli(installed, "merge", recipe, "--out", tmp_path / "merged")
    assert (tmp_path / "merged" / "config.json").is_file()
    _cli(installed, "eval", f"model={tmp_path / 'merged'}", "suite=general_ppl", "limit=2",
         "max_length=64", f"cache_dir={tmp_path / 'cache'}", f"out={tmp_path / 'ev'}")  # fmt: skip
    results = json.loads((tmp_path / "ev" / "results.json").read_text())
    assert results["tasks"]["spear_general_ppl"]["score"] > 0
