from __future__ import annotations

import shutil
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from api.routes.deps import Ctx, CurrentUser
from api.schemas.datasets import DatasetList, DatasetRead
from core.datasets import service
from core.datasets.archive import MAX_REPEATS
from core.datasets.multipart import ReceivedForm, receive_form
from core.datasets.staging import staging_dir
from core.db import Dataset
from core.errors import TooLarge

router = APIRouter(prefix="/v1/datasets", tags=["datasets"])

# The form as core/datasets (multipart.receive_form, service.parse_repeats) reads it. The
# file part's media type is stated in the OpenAPI "Encoding Object": a zip, not any binary.
UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {
                            "type": "string",
                            "format": "binary",
                            "description": "a zip of <repeats>_<name>/ folders: images and "
                            ".txt captions",
                        },
                        "name": {"type": "string", "description": "default: the file's name"},
                        "repeats": {
                            "type": "integer",
                            "minimum": 1,
                            "maximum": MAX_REPEATS,
                            "description": "for folders without an N_ prefix (default 1)",
                        },
                    },
                },
                "encoding": {"file": {"contentType": "application/zip"}},
            }
        },
    }
}


def _read(dataset: Dataset) -> DatasetRead:
    return DatasetRead.model_validate(dataset, from_attributes=True)


@router.post("", status_code=201, response_model=DatasetRead, openapi_extra=UPLOAD_BODY)
async def upload_dataset(request: Request, ctx: Ctx, user: CurrentUser) -> DatasetRead:
    """Upload a zip of `<repeats>_<name>/` folders (images + .txt captions)."""
    settings = ctx.settings
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > settings.max_upload_bytes + 64 * 1024:
        raise TooLarge(f"upload larger than the limit of {settings.max_upload_bytes} bytes")
    # Partial uploads live under the home (same filesystem), never in the system tmp.
    workdir = staging_dir(settings, "upload")
    try:
        form = await receive_form(
            request.stream(),
            request.headers.get("content-type", ""),
            workdir,
            max_bytes=settings.max_upload_bytes,
        )
        repeats = service.parse_repeats(form.fields.get("repeats"))
        return await run_in_threadpool(_create, ctx, user, form, repeats)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _create(ctx: Ctx, user: CurrentUser, form: ReceivedForm, repeats: int) -> DatasetRead:
    assert form.file_path is not None
    with ctx.db.writing() as session:
        dataset = service.create_dataset(
            session,
            ctx.settings,
            owner=user,
            zip_path=form.file_path,
            sha256=form.file_sha256,
            name=form.fields.get("name"),
            filename=form.filename,
            repeats=repeats,
        )
        return _read(dataset)


@router.get("", response_model=DatasetList)
def list_datasets(
    ctx: Ctx,
    user: CurrentUser,
    scope: str = "mine",
    sha256: Annotated[
        str | None,
        Query(
            pattern="^[0-9a-f]{64}$",
            description="only those uploaded from a zip with this SHA-256 (a client reuses "
            "one instead of uploading it again)",
        ),
    ] = None,
) -> DatasetList:
    """Your datasets, newest first; admins may pass `scope=all`."""
    with ctx.db.reading() as session:
        rows = service.list_datasets(session, user=user, all_users=scope == "all", sha256=sha256)
        return DatasetList(items=[_read(d) for d in rows])


@router.get("/{dataset_id}", response_model=DatasetRead)
def get_dataset(dataset_id: str, ctx: Ctx, user: CurrentUser) -> DatasetRead:
    with ctx.db.reading() as session:
        return _read(service.get_dataset(session, user=user, dataset_id=dataset_id))


@router.delete("/{dataset_id}", status_code=204)
def delete_dataset(dataset_id: str, ctx: Ctx, user: CurrentUser) -> Response:
    """Deletes the dataset and its files (409 while a queued or running job uses it)."""
    with ctx.db.writing() as session:
        service.delete_dataset(session, ctx.settings, user=user, dataset_id=dataset_id)
    return Response(status_code=204)
