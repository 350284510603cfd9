"""One run per `out=` (advisory lock) and a full disk as a one-line error, for every Hydra verb.

Unit tests drive `spear_mm.io.runlock` directly; the CLI tests run the real verbs in subprocesses:
against an `out` whose lock another process holds, and into a tiny tmpfs (mounted when the test
runs as root; skipped otherwise — the in-process ENOSPC tests below cover the same code path).
"""

from __future__ import annotations

import errno
import os
import subprocess
from pathlib import Path

import pytest

from spear_mm.errors import UserError
from spear_mm.io import runlock


# ------------------------------------------------------------------ the module itself
def test_second_holder_is_refused_and_the_lock_file_goes_away(tmp_path):
    out = tmp_path / "out"
    with runlock.hold(out, "first"):
        assert (out / runlock.LOCK_NAME).is_file()
        busy = pytest.raises(UserError, match="in use by another spear-mm run .*first")
        with busy, runlock.hold(out, "second"):
            pass
        assert out.is_dir()  # the refused run removed nothing
    assert list(out.iterdir()) == []  # released: no lock file among the results
    with runlock.hold(out):  # and it can be taken again
        pass


def test_ranks_above_0_of_one_launch_take_no_lock(tmp_path, monkeypatch):
    out = tmp_path / "out"
    with runlock.hold(out, "rank 0"):
        monkeypatch.setenv("RANK", "1")
        with runlock.hold(out):  # the same launch: no "in use" error
            pass
        monkeypatch.setenv("RANK", "0")
        with pytest.raises(UserError, match="in use"), runlock.hold(out):
            pass


def test_a_failed_run_removes_only_the_folder_it_created(tmp_path):
    new = tmp_path / "new"
    with pytest.raises(UserError), runlock.hold(new):
        (new / "half.json").write_text("{")
        raise UserError("bad input")
    assert not new.exists()
    old = tmp_path / "old"
    old.mkdir()
    (old / "results.json").write_text("{}")
    with pytest.raises(UserError), runlock.hold(old):
        raise UserError("bad input")
    assert sorted(p.name for p in old.iterdir()) == ["results.json"]
    staged = tmp_path / "staged"  # a study whose first stage finished is kept for the re-run
    with pytest.raises(UserError), runlock.hold(staged):
        (staged / "train").mkdir()
        (staged / "train" / runlock.STAGE_MARKER).write_text("{}")
        raise UserError("bad input in a later stage")
    assert (staged / "train" / runlock.STAGE_MARKER).is_file()


def test_internal_errors_are_not_masked(tmp_path):
    o = tmp_path / "o"
    with pytest.raises(ZeroDivisionError), runlock.hold(o), runlock.disk_errors(o):
        raise ZeroDivisionError
    assert not (tmp_path / "o" / runlock.LOCK_NAME).exists()


@pytest.mark.parametrize(
    "exc",
    [
        OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/x/analysis.json"),
        OSError(errno.EDQUOT, os.strerror(errno.EDQUOT)),
        RuntimeError("Error while serializing: I/O error: No space left on device (os error 28)"),
    ],
)
def test_disk_full_becomes_a_one_line_user_error(tmp_path, exc):
    full = pytest.raises(UserError, match="no space left on the device writing")
    with full as info, runlock.disk_errors(tmp_path):
        raise exc
    assert "\n" not in str(info.value) and "out=" in str(info.value)


def test_other_os_errors_pass_through(tmp_path):
    with pytest.raises(PermissionError), runlock.disk_errors(tmp_path):
        raise PermissionError(errno.EACCES, "denied")


def test_run_task_enospc_restores_and_removes(tmp_path):
    """The Hydra runner: a task whose write fails with ENOSPC → UserError, nothing left."""
    from dataclasses import dataclass

    from omegaconf import OmegaConf

    from spear_mm.cli.hydra_app import _run_task

    @dataclass
    class Cfg:  # a verb's schema: the task gets the dataclass
        out: str
        seed: int = 0

    out = tmp_path / "out"
    cfg = OmegaConf.structured(Cfg(out=str(out)))

    def task(cfg):
        (Path(cfg.out) / "partial.bin").write_bytes(b"x" * 10)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(Path(cfg.out) / "partial.bin"))

    with pytest.raises(UserError, match="partial.bin"):
        _run_task(cfg, task, write_info=True)
    assert not out.exists()


# ------------------------------------------------------------------ every verb through the CLI
def _verbs(p: dict, out: str) -> dict[str, list[str]]:
    pair = [f"base={p['base']}", f"adapted={p['adapted']}", f"out={out}"]
    return {
        "train": ["train", f"model.name={p['base']}", "trainer.max_steps=1",
                  "trainer.progress=false", "data.general=null", f"out={out}"],
        "analyze": ["analyze", *pair],
        "sweep": ["sweep", *pair, "probe.max_tokens=64", "families=[uniform]"],
        "eval": ["eval", f"model.name={p['base']}", "limit=2", f"out={out}"],
        "run": ["run", "experiment=tiny", f"model.name={p['base']}", f"out={out}"],
    }  # fmt: skip


@pytest.fixture(scope="module")
def pair_paths(small_pair) -> dict:
    return {"base": str(small_pair[0]), "adapted": str(small_pair[1])}


@pytest.mark.parametrize("verb", ["train", "analyze", "sweep", "eval", "run"])
def test_concurrent_run_into_the_same_out_is_refused(verb, pair_paths, tmp_path, rel, cli_env):
    out = tmp_path / "busy"
    out.mkdir()
    (out / "results.json").write_text('{"from": "the first run"}\n')
    before = rel.tree_hash(tmp_path)
    with runlock.hold(out, "spear-mm test holder"):
        proc = rel.run_cli(cli_env, *_verbs(pair_paths, str(out))[verb], timeout=180)
        inside = rel.tree_hash(tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert f"out={out} is in use by another spear-mm run" in lines[0]
    assert "test holder" in lines[0] and "choose another out=" in lines[0]
    inside.pop(f"busy/{runlock.LOCK_NAME}")
    assert inside == before and rel.tree_hash(tmp_path) == before


@pytest.fixture(scope="module")
def tiny_disk(tmp_path_factory):
    """A 48 KiB tmpfs (root only); skipped where mounting is not allowed."""
    mnt = tmp_path_factory.mktemp("tiny_disk")
    res = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=48k", "tmpfs", str(mnt)],
        capture_output=True,
        text=True,
    )
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({res.stderr.strip()}); see test above")
    yield mnt
    subprocess.run(["umount", str(mnt)], check=False)


@pytest.mark.parametrize("verb", ["train", "analyze", "sweep", "run"])
def test_full_disk_is_a_one_line_error_and_leaves_nothing(
    verb, pair_paths, tiny_disk, rel, cli_env, small_pair
):
    out = tiny_disk / "out"
    inputs = rel.tree_hash(Path(small_pair[0]).parent)
    proc = rel.run_cli(cli_env, *_verbs(pair_paths, str(out))[verb], timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    # progress lines may come first: the disk fills mid-run; the error is the last line
    assert last.startswith("spear-mm: error: no space left on the device writing "), last
    assert list(tiny_disk.iterdir()) == [], list(tiny_disk.rglob("*"))
    assert rel.tree_hash(Path(small_pair[0]).parent) == inputs
