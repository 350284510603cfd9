"""Atomic output folders: write into a temp folder beside the target, rename when complete.

A process killed at any moment leaves either no target or the previous complete target; the
temp folder it leaves (`.NAME.tmp-PID-RAND`) is removed by the next run that writes the same
target, once its owner process is gone.
"""

from __future__ import annotations

import contextlib
import math
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

from spear_mm.errors import UserError

_TMP_TAG = ".tmp-"
_OLD_TAG = ".old-"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale_temps(target: Path) -> None:
    """Remove temp/old folders of `target` left by processes that no longer run."""
    parent = target.parent
    if not parent.is_dir():
        return
    prefix = f".{target.name}"
    for entry in parent.iterdir():
        name = entry.name
        if not name.startswith(prefix):
            continue
        rest = name[len(prefix) :]
        if not (rest.startswith(_TMP_TAG) or rest.startswith(_OLD_TAG)):
            continue
        try:
            pid = int(rest[len(_TMP_TAG) :].split("-")[0])
        except ValueError:
            continue
        if not _pid_alive(pid) or pid == os.getpid():
            shutil.rmtree(entry, ignore_errors=True)


def check_writable_target(target: Path, force: bool) -> None:
    """Refuse an existing target without `force`, and a parent we cannot write into."""
    if target.exists() and not force:
        raise UserError(
            f"output folder {target} already exists; pass --force (or force=true) to replace it"
        )
    if target.exists() and not target.is_dir():
        raise UserError(f"output path {target} exists and is not a folder; choose another --out")
    parent = target.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create output parent folder {parent}: {exc.strerror}") from None
    if not os.access(parent, os.W_OK):
        raise UserError(f"output folder {parent} is not writable; choose another --out")


@contextlib.contextmanager
def atomic_dir(target: str | os.PathLike, force: bool = False) -> Iterator[Path]:
    """Yield a temp folder that becomes `target` when the block exits without error.

    An existing `target` is refused unless `force`; with `force` it is replaced only after the new
    content is complete (the old one is moved aside, then deleted). On error the temp folder is
    removed and any existing target is left untouched.
    """
    target = Path(target).absolute()
    check_writable_target(target, force)
    clean_stale_temps(target)
    tmp = target.parent / f".{target.name}{_TMP_TAG}{os.getpid()}-{secrets.token_hex(4)}"
    try:
        tmp.mkdir()
    except OSError as exc:  # read-only file system, no permission (even as root), ...
        raise UserError(
            f"cannot write into output folder {target.parent} ({exc.strerror}); "
            "choose another --out"
        ) from None
    try:
        yield tmp
        _fsync_tree(tmp)
        if target.exists():
            old = target.parent / f".{target.name}{_OLD_TAG}{os.getpid()}-{secrets.token_hex(4)}"
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
        _fsync_dir(target.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _fsync_tree(folder: Path) -> None:
    # Data must be on disk before the rename makes the folder visible as complete.
    for path in folder.rglob("*"):
        if path.is_file():
            with open(path, "rb") as fh:
                os.fsync(fh.fileno())
    _fsync_dir(folder)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write a small file atomically (temp file + rename)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}{_TMP_TAG}{os.getpid()}-{secrets.token_hex(4)}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def save_figure(fig, path: str | os.PathLike, **savefig) -> None:
    """Write a matplotlib figure as PNG atomically (a temp file renamed over `path`), then close
    it: a reader never sees half a plot."""
    import matplotlib.pyplot as plt

    path = Path(path)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}{_TMP_TAG}{os.getpid()}-{secrets.token_hex(4)}")
    fig.savefig(tmp, format="png", **savefig)
    plt.close(fig)
    tmp.replace(path)


def json_safe(obj):
    """A copy of `obj` that strict JSON can hold: NaN / inf → None, paths → str (recursively)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    return obj
