"""A job's log, read in chunks from a byte offset so clients can tail it."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session

from core.db.tables import JobStatus, User
from core.jobs.artifacts import LOG_NAME, job_dir
from core.jobs.service import get_job
from core.settings import Settings

MAX_CHUNK_BYTES = 256 * 1024


@dataclass(frozen=True)
class LogChunk:
    offset: int
    next_offset: int
    text: str
    finished: bool


def complete_utf8(data: bytes) -> bytes:
    """Drops a multi-byte character cut at the end of a chunk; the next read starts on it."""
    for back in range(1, min(4, len(data)) + 1):
        byte = data[-back]
        if byte < 0x80:  # ASCII: nothing is cut
            return data
        if byte >= 0xC0:  # the lead byte of the last character
            needed = 2 if byte < 0xE0 else 3 if byte < 0xF0 else 4
            return data if back >= needed else data[:-back]
    return data


def read_log(
    session: Session,
    settings: Settings,
    *,
    user: User,
    job_id: str,
    offset: int,
    max_bytes: int = MAX_CHUNK_BYTES,
) -> LogChunk:
    """Up to ``max_bytes`` of the log from ``offset``. ``finished``: the job ended and there
    is nothing more to read, so a follower can stop."""
    job = get_job(session, user=user, job_id=job_id)
    ended = JobStatus(job.status).finished
    root = job_dir(settings, job.id)
    path = root / LOG_NAME
    if path.is_symlink():  # only the job's own file, never one a link points at
        return LogChunk(offset, offset, "", ended)
    try:
        with path.open("rb") as handle:
            size = handle.seek(0, 2)
            start = min(offset, size)
            handle.seek(start)
            data = handle.read(max_bytes)
    except FileNotFoundError:
        return LogChunk(offset, offset, "", ended)
    data = complete_utf8(data) if len(data) == max_bytes else data
    end = start + len(data)
    return LogChunk(start, end, data.decode("utf-8", errors="replace"), ended and end >= size)
