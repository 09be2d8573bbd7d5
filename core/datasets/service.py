"""Dataset service: create from an uploaded zip, list, get, delete. HTTP-free."""

from __future__ import annotations

import errno
import re
import shutil
import zipfile
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from core.datasets.archive import MAX_REPEATS, Limits, extract, plan_extraction
from core.datasets.staging import staging_dir
from core.datasets.validate import validate_extracted
from core.db.tables import Dataset, Job, JobStatus, User
from core.errors import Conflict, InsufficientStorage, InvalidInput, NotFound, Problem
from core.settings import Settings

CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")


def _clean_name(raw: str | None, filename: str | None) -> str:
    """The display name, without control characters (PostgreSQL text can't even hold a NUL)."""
    raw, filename = CONTROL_CHARS.sub("", raw or ""), CONTROL_CHARS.sub("", filename or "")
    name = raw.strip() or Path(filename or "dataset").stem or "dataset"
    return name[:200]


def _folder_name(name: str) -> str:
    """A safe concept-folder name for images that sit at the zip's root."""
    return re.sub(r"[^A-Za-z0-9 ._-]+", "_", name).strip(" ._") or "images"


def parse_repeats(raw: str | None) -> int:
    if raw is None or raw.strip() == "":
        return 1
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if not 1 <= value <= MAX_REPEATS:
        raise InvalidInput(
            [Problem(("body", "repeats"), f"must be an integer from 1 to {MAX_REPEATS}")]
        )
    return value


def create_dataset(
    session: Session,
    settings: Settings,
    *,
    owner: User,
    zip_path: Path,
    sha256: str,
    name: str | None,
    filename: str | None,
    repeats: int,
) -> Dataset:
    """Checks, extracts and validates the zip, then publishes it with one rename.

    Work happens in a staging folder under the home's tmp/; a rejected upload leaves nothing.
    """
    dataset_name = _clean_name(name, filename)
    limits = Limits(settings.zip_max_members, settings.zip_max_ratio, settings.zip_max_total_bytes)
    staging = staging_dir(settings, "dataset")
    try:
        try:
            with zipfile.ZipFile(zip_path) as zf:
                plan = plan_extraction(
                    zf, limits, repeats=repeats, default_name=_folder_name(dataset_name)
                )
                free = shutil.disk_usage(settings.datasets_dir).free
                if plan.total_bytes > free - settings.disk_reserve_bytes:
                    raise InsufficientStorage(
                        f"extracting needs {plan.total_bytes} bytes; {free} are free"
                    )
                extract(zf, plan, staging)
        except zipfile.BadZipFile as exc:
            raise InvalidInput(
                [Problem(("body", "file"), f"not a valid zip archive: {exc}")]
            ) from exc
        except UnicodeDecodeError as exc:  # a name flagged UTF-8 that isn't
            raise InvalidInput(
                [Problem(("body", "file"), f"a member name is not valid UTF-8: {exc}")]
            ) from exc
        except OSError as exc:
            if exc.errno == errno.ENOSPC:  # the estimate passed, the disk filled meanwhile
                raise InsufficientStorage("the disk filled up while extracting") from exc
            raise
        summary = validate_extracted(staging, plan, max_pixels=settings.max_image_pixels)
        dataset = Dataset(
            owner_id=owner.id,
            name=dataset_name,
            image_count=summary.image_count,
            caption_count=summary.caption_count,
            folders=[asdict(f) for f in summary.folders],
            size_bytes=plan.total_bytes,
            sha256=sha256,
            warnings=[asdict(w) for w in summary.warnings],
        )
        session.add(dataset)
        session.flush()  # assigns the id
        staging.rename(settings.datasets_dir / dataset.id)
        return dataset
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def as_warning(stored: str | dict[str, Any]) -> dict[str, Any]:
    """A stored dataset warning as ``{field, message}``; rows from before lorabox named the
    field hold a bare string."""
    return {"field": None, "message": stored} if isinstance(stored, str) else stored


def folder_warnings(dataset: Dataset) -> list[dict[str, Any]]:
    """What the upload assumed about its folders (repeats): a job's plan repeats it."""
    return [w for w in map(as_warning, dataset.warnings or []) if w["field"] == "folders"]


def dataset_path(settings: Settings, dataset: Dataset) -> Path:
    return settings.datasets_dir / dataset.id


def get_dataset(session: Session, *, user: User, dataset_id: str) -> Dataset:
    dataset = session.get(Dataset, dataset_id)
    if dataset is None or not (user.is_admin or dataset.owner_id == user.id):
        raise NotFound("dataset not found")
    return dataset


def list_datasets(
    session: Session, *, user: User, all_users: bool = False, sha256: str | None = None
) -> Sequence[Dataset]:
    """Newest first; ``sha256``: only those uploaded from a zip with that digest."""
    query = sa.select(Dataset).order_by(Dataset.created_at.desc(), Dataset.id)
    if not (all_users and user.is_admin):
        query = query.where(Dataset.owner_id == user.id)
    if sha256 is not None:
        query = query.where(Dataset.sha256 == sha256)
    return session.scalars(query).all()


def delete_dataset(session: Session, settings: Settings, *, user: User, dataset_id: str) -> None:
    dataset = get_dataset(session, user=user, dataset_id=dataset_id)
    active = (JobStatus.QUEUED, JobStatus.RUNNING)
    in_use = session.scalar(
        sa.select(sa.func.count())
        .select_from(Job)
        .where(
            Job.status.in_(active),
            sa.or_(Job.dataset_id == dataset.id, Job.reg_dataset_id == dataset.id),
        )
    )
    if in_use:
        raise Conflict("dataset is used by a queued or running job")
    session.delete(dataset)
    session.flush()
    # Files go after the row; a crash between leaves an orphan folder, never a dangling row.
    shutil.rmtree(dataset_path(settings, dataset), ignore_errors=True)
