"""A job's files: only registered artifacts are listed and served."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.orm import Session

from core.catalog.hashing import sha256_file
from core.db.tables import Artifact, User
from core.errors import NotFound
from core.jobs.service import get_job
from core.settings import Settings

# The trainer process's stdout and stderr, in the job's folder (worker/child.redirect_output).
LOG_NAME = "train.log"


def job_dir(settings: Settings, job_id: str) -> Path:
    return settings.jobs_dir / job_id


def list_artifacts(session: Session, *, user: User, job_id: str) -> Sequence[Artifact]:
    job = get_job(session, user=user, job_id=job_id)
    return session.scalars(
        sa.select(Artifact).where(Artifact.job_id == job.id).order_by(Artifact.name)
    ).all()


def artifact_file(
    session: Session, settings: Settings, *, user: User, job_id: str, name: str
) -> tuple[Artifact, Path]:
    job = get_job(session, user=user, job_id=job_id)
    artifact = session.scalar(
        sa.select(Artifact).where(Artifact.job_id == job.id, Artifact.name == name)
    )
    root = job_dir(settings, job.id).resolve()
    path = (root / name).resolve()
    if artifact is None or not path.is_relative_to(root) or not path.is_file():
        raise NotFound("artifact not found")
    return artifact, path


def job_file(settings: Settings, job_id: str, name: str) -> Path | None:
    """The file ``name`` of the job, if it exists inside the job's folder."""
    root = job_dir(settings, job_id).resolve()
    path = (root / name).resolve()
    return path if path.is_relative_to(root) and path.is_file() else None


def register_artifact(
    session: Session,
    settings: Settings,
    *,
    job_id: str,
    name: str,
    kind: str,
    epoch: int | None = None,
    step: int | None = None,
    sha256: str | None = None,
) -> Artifact | None:
    """Records a file the trainer published (hash and size); ignores paths outside the job.

    Pass ``sha256`` when it was computed before the transaction: hashing a multi-GB state
    inside it would hold the job's row lock meanwhile (a cancel would wait on it)."""
    path = job_file(settings, job_id, name)
    if path is None:
        return None
    relative = path.relative_to(job_dir(settings, job_id).resolve()).as_posix()
    artifact = session.scalar(
        sa.select(Artifact).where(Artifact.job_id == job_id, Artifact.name == relative)
    )
    if artifact is None:
        artifact = Artifact(job_id=job_id, name=relative)
        session.add(artifact)
    artifact.kind = kind
    artifact.size_bytes = path.stat().st_size
    artifact.sha256 = sha256 or sha256_file(path)
    artifact.epoch = epoch
    artifact.step = step
    return artifact


def forget_lost_artifacts(session: Session, settings: Settings, job_id: str) -> list[str]:
    """Unlists the job's artifacts whose files are gone; returns their names.

    A trainer reports a deletion before making it, but the report can die with its worker while
    the trainer, orphaned for a moment, still deletes: a new attempt starts by making the
    listing true again, so it does not resume from (nor list) a state that no longer exists.
    Only a file known to be gone counts: a job folder that isn't there (storage not mounted) or
    a file that can't be looked at (EACCES, EIO, ESTALE) unlists nothing.
    """
    root = job_dir(settings, job_id)
    if not root.is_dir():
        return []
    lost = []
    for name in session.scalars(sa.select(Artifact.name).where(Artifact.job_id == job_id)):
        try:
            (root / name).stat()
        except FileNotFoundError:
            lost.append(name)
        except OSError:
            continue
    for name in lost:
        unregister_artifact(session, job_id=job_id, name=name)
    return lost


def unregister_artifact(session: Session, *, job_id: str, name: str) -> None:
    """The trainer deleted a file it published (a ``save_last_n_steps`` window moved on)."""
    session.execute(sa.delete(Artifact).where(Artifact.job_id == job_id, Artifact.name == name))
