"""One run per output folder, and a full disk as a one-line error.

`hold(out)` is taken around a whole Hydra verb run (`cli.hydra_app`): it creates `out`, takes an
advisory lock on `out/.spear-mm.lock` (``fcntl.flock``, exclusive, non-blocking) and holds it until
the run ends. A second run into the same `out` fails at once with a `UserError` naming the holder,
instead of interleaving its files with the first. The kernel drops the lock when the holder dies
(even by SIGKILL), so a crashed run never blocks the next one; the lock file is removed when the
run ends, so it never shows up among the results. In a multi-process launch (torchrun, `accelerate
launch`) rank 0 holds the lock for the whole launch; the other ranks (RANK > 0) take none.

On a `UserError` (bad input, a busy `out`, a full disk) a folder that this run created is removed
again — nothing half-written stays behind — unless it already holds a finished study stage
(``*/stage.json``, written last by `spear-mm run`), which is complete and reused by the next run.
A folder that existed before is never removed; its files are replaced one by one, atomically.

`disk_errors(out)` turns ENOSPC / EDQUOT anywhere in the run into a `UserError` that names the file
and the fix.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

from spear_mm.errors import UserError

LOCK_NAME = ".spear-mm.lock"
STAGE_MARKER = "stage.json"  # a finished `spear-mm run` stage (spear_mm/pipeline/stages.py)
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def _open_locked(path: Path, out: Path) -> int:
    """Open and lock ``path``; the descriptor, or UserError when another process holds it."""
    for _ in range(5):
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise UserError(
                f"out={out}: cannot create the run lock {path.name} ({exc.strerror}); "
                "choose a writable out="
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "unknown process"
            os.close(fd)
            raise UserError(
                f"out={out} is in use by another spear-mm run ({holder}); wait for it to finish "
                "or choose another out="
            ) from None
        try:  # a finishing run unlinks the file it locked: make sure ours is still the one
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)
    raise UserError(f"out={out}: could not take the run lock {path.name}; try again")


def _note_holder(fd: int, what: str) -> None:
    with contextlib.suppress(OSError):  # cosmetic: a full disk must not fail the lock
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()}, {what}\n".encode(), 0)


def _prepare(out: Path) -> bool:
    """Create ``out`` when missing; True when this call created it."""
    if out.exists() and not out.is_dir():
        raise UserError(f"out={out} exists and is not a folder; choose another out=")
    created = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(
            f"out={out}: cannot create the output folder ({exc.strerror}); choose a writable out="
        ) from None
    return created


def _discard(out: Path) -> None:
    """Remove a folder this run created, unless a finished stage lives in it."""
    if any(out.glob(f"*/{STAGE_MARKER}")):
        return
    shutil.rmtree(out, ignore_errors=True)


@contextlib.contextmanager
def hold(out: Path | None, what: str | None = None) -> Iterator[None]:
    """Hold the run lock of ``out`` for the block (no-op for None); see the module doc.

    ``what`` is written into the lock file for the message a refused run prints (default: the
    verb of this process's command line, e.g. "spear-mm analyze")."""
    if out is None or _worker_rank():
        yield
        return
    out = Path(out)
    created = _prepare(out)
    path = out / LOCK_NAME
    try:
        fd = _open_locked(path, out)
    except UserError:
        if created:
            _discard(out)
        raise
    _note_holder(fd, what or " ".join(["spear-mm", *sys.argv[1:2]]))
    try:
        yield
    except UserError:
        _unlock(fd, path)
        if created:
            _discard(out)
        raise
    except BaseException:
        _unlock(fd, path)
        raise
    _unlock(fd, path)


def _worker_rank() -> bool:
    """A rank > 0 of a multi-process launch (torchrun / `accelerate launch` set RANK): the whole
    launch is one run, and rank 0 holds its lock."""
    try:
        return int(os.environ.get("RANK", "0")) > 0
    except ValueError:
        return False


def _unlock(fd: int, path: Path) -> None:
    # Unlink while still holding the lock, so a run that opened the old file sees it is stale.
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    os.close(fd)


def is_disk_full(exc: BaseException) -> bool:
    """ENOSPC / EDQUOT as an OSError, or as the text of a library's own error type
    (safetensors' Rust writer raises SafetensorError "... (os error 28)", not OSError)."""
    if isinstance(exc, OSError) and exc.errno in DISK_FULL:
        return True
    text = str(exc)
    return any(f"(os error {code})" in text for code in DISK_FULL) or (
        os.strerror(errno.ENOSPC) in text
    )


@contextlib.contextmanager
def disk_errors(out: Path | None) -> Iterator[None]:
    """Turn a full disk (ENOSPC, EDQUOT) inside the block into a one-line UserError."""
    try:
        yield
    except Exception as exc:
        if isinstance(exc, UserError) or not is_disk_full(exc):
            raise
        where = getattr(exc, "filename", None) or out or "the output folder"
        raise UserError(
            f"no space left on the device writing {where}; free space there or choose another "
            "out=, then run again"
        ) from None
