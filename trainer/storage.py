"""Atomic file writes: a reader never sees a half-written artifact."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from trainer.errors import DiskFullError

_TMP = ".tmp"


@contextmanager
def atomic_path(final: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``final``; rename it into place on success.

    The temporary file lives in the same directory so the rename is atomic on
    POSIX. On any failure it is removed, so no truncated file is published.
    A full disk becomes a ``DiskFullError`` naming the file. A process killed in here
    leaves the temporary file behind: its host removes it (``remove_temporaries``).
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.{os.getpid()}{_TMP}")
    try:
        yield tmp
        os.replace(tmp, final)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if _disk_full(exc):
            raise DiskFullError(f"disk full while writing {final.name}") from exc
        raise


def remove_temporaries(folder: Path, pid: int) -> list[Path]:
    """Deletes the temporary files ``atomic_path`` left under ``folder`` in process ``pid``
    (one killed mid-write cannot clean up); returns them. Never a published file."""
    if not folder.is_dir():
        return []
    removed = []
    for path in folder.rglob(f".*.{pid}{_TMP}"):
        if path.is_file() and not path.is_symlink():
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def _disk_full(exc: BaseException) -> bool:
    """ENOSPC; safetensors reports it as a SafetensorError carrying only the OS message."""
    if isinstance(exc, OSError):
        return exc.errno == errno.ENOSPC
    return "No space left on device" in str(exc) or "os error 28" in str(exc)
