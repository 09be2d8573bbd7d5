"""Partial uploads: where they are staged, and removing those a dead API process left behind.

Each staging folder under the home's tmp/ is named ``<kind>@<host>@<pid>@<random>``, so an API
process starting up removes exactly the folders of processes that are gone (a SIGKILL, a power
cut mid-upload), never those of a sibling still receiving an upload.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import tempfile
import time
from pathlib import Path

from core.settings import Settings

log = logging.getLogger(__name__)
FOREIGN_MAX_AGE_S = 24 * 3600  # another host's staging folder this old is abandoned


def staging_dir(settings: Settings, kind: str) -> Path:
    prefix = f"{kind}@{socket.gethostname()}@{os.getpid()}@"
    return Path(tempfile.mkdtemp(prefix=prefix, dir=settings.tmp_dir))


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():  # we are starting: none of ours exist (containers reuse pid 1)
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _abandoned(entry: Path, host: str, now: float) -> bool:
    parts = entry.name.split("@")
    if len(parts) == 4 and parts[1] == host and parts[2].isdigit():
        return not _pid_alive(int(parts[2]))
    try:
        return now - entry.stat().st_mtime > FOREIGN_MAX_AGE_S
    except FileNotFoundError:
        return False


def sweep_partial_uploads(settings: Settings) -> list[str]:
    """Removes staging folders whose process is gone; returns their names."""
    host, now, removed = socket.gethostname(), time.time(), []
    for entry in sorted(settings.tmp_dir.iterdir()):
        if _abandoned(entry, host, now):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
            removed.append(entry.name)
    if removed:
        log.warning("removed %d partial upload(s) left by a stopped process", len(removed))
    return removed
