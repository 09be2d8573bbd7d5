from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query, Response
from fastapi.responses import FileResponse

from api.routes.deps import Ctx, CurrentUser
from api.schemas.jobs import (
    ArtifactList,
    JobCreate,
    JobList,
    JobRead,
    JobStatusName,
    JobUpdate,
    ValidationRead,
)
from api.views import artifact_list, fetch_job_read, many_jobs, one_job
from core.jobs import artifacts as artifact_service
from core.jobs import service
from core.jobs.broker import send_or_defer
from core.jobs.forecast import refresh_after_change
from core.jobs.priorities import update_job
from core.jobs.validation import validate_job

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])
# What the service accepts, stated in the OpenAPI document (core/jobs/service.py:
# submit_job, _decode_cursor): a key is 1-200 visible ASCII characters (inner spaces
# allowed; HTTP strips a header's outer ones), a cursor is a page's base64url next_cursor.
IDEMPOTENCY_KEY = r"^[!-~]([ -~]*[!-~])?$"
CURSOR = "^[A-Za-z0-9_-]+$"


@router.post("", status_code=202, response_model=JobRead, responses={200: {"model": JobRead}})
def submit_job(
    body: JobCreate,
    response: Response,
    ctx: Ctx,
    user: CurrentUser,
    idempotency_key: Annotated[
        str | None, Header(min_length=1, max_length=200, pattern=IDEMPOTENCY_KEY)
    ] = None,
) -> JobRead:
    """Queue a training job. Same `Idempotency-Key` + same body: the original job (200)."""
    with ctx.db.writing() as session:
        job, created = service.submit_job(
            session,
            ctx.settings,
            user=user,
            request=body,
            idempotency_key=idempotency_key,
        )
        job_id = job.id
    # The message goes out only after the commit, so a worker always finds the row.
    if created:
        send_or_defer(ctx.broker, job_id)
        refresh_after_change(ctx.db, ctx.settings)
    else:
        response.status_code = 200
    response.headers["Location"] = f"/v1/jobs/{job_id}"
    with ctx.db.reading() as session:
        return one_job(session, service.get_job(session, user=user, job_id=job_id))


@router.post("/validate", response_model=ValidationRead)
def validate(body: JobCreate, ctx: Ctx, user: CurrentUser) -> ValidationRead:
    """Check a submission and show its plan (steps, epochs, buckets) and estimate (GPU
    memory, time on each worker) without queueing it."""
    with ctx.db.reading() as session:
        valid = validate_job(session, ctx.settings, user=user, request=body)
    return ValidationRead.model_validate(valid.plan | {"estimate": valid.estimate})


@router.get("", response_model=JobList)
def list_jobs(
    ctx: Ctx,
    user: CurrentUser,
    status: JobStatusName | None = None,
    scope: Annotated[str, Query(pattern="^(mine|all)$")] = "mine",
    limit: Annotated[int, Query(ge=1, le=service.MAX_PAGE)] = 50,
    cursor: Annotated[
        str | None,
        Query(min_length=1, max_length=200, pattern=CURSOR, description="next_cursor, as given"),
    ] = None,
) -> JobList:
    """Newest first. `scope=all` lists everyone's jobs (admins)."""
    with ctx.db.reading() as session:
        jobs, next_cursor = service.list_jobs(
            session,
            user=user,
            status=status,
            all_users=scope == "all",
            limit=limit,
            cursor=cursor,
        )
        return JobList(items=many_jobs(session, jobs), next_cursor=next_cursor)


@router.get("/{job_id}", response_model=JobRead)
async def get_job(job_id: str, ctx: Ctx, user: CurrentUser) -> Response:
    """The job. Scripts poll this: it runs inline (indexed reads), no thread hop."""
    with ctx.db.on_event_loop():
        job = ctx.db.read_polling(lambda conn: fetch_job_read(conn, user=user, job_id=job_id))
    return Response(job.model_dump_json(), media_type="application/json")


@router.patch("/{job_id}", response_model=JobRead)
def update(job_id: str, body: JobUpdate, ctx: Ctx, user: CurrentUser) -> JobRead:
    """Hold, release or re-prioritise a queued job (409 once it runs). Users: their own jobs,
    low or normal; admins: any job, any tier. Each change is an event on the job."""
    with ctx.db.writing() as session:
        job = service.get_job(session, user=user, job_id=job_id)
        changed = update_job(session, user=user, job=job, priority=body.priority, held=body.held)
    if changed:  # the queue's order moved: positions, forecasts, and an idle worker may start
        if body.held is False:
            send_or_defer(ctx.broker, job_id)  # released: it may start
        refresh_after_change(ctx.db, ctx.settings)
    with ctx.db.reading() as session:
        return one_job(session, service.get_job(session, user=user, job_id=job_id))


@router.post("/{job_id}/cancel", response_model=JobRead)
def cancel_job(job_id: str, ctx: Ctx, user: CurrentUser) -> JobRead:
    """Discard: a queued job never starts; a running one stops within a step (`cancelled`)."""
    with ctx.db.writing() as session:
        service.cancel_job(session, user=user, job_id=job_id)
    refresh_after_change(ctx.db, ctx.settings)
    with ctx.db.reading() as session:
        return one_job(session, service.get_job(session, user=user, job_id=job_id))


@router.post("/{job_id}/stop", response_model=JobRead)
def stop_job(job_id: str, ctx: Ctx, user: CurrentUser) -> JobRead:
    """Finish early: save the LoRA from the current weights (`succeeded`).

    A queued job has no weights yet, so stopping it cancels it."""
    with ctx.db.writing() as session:
        return one_job(session, service.stop_job(session, user=user, job_id=job_id))


@router.delete("/{job_id}", status_code=204)
def delete_job(job_id: str, ctx: Ctx, user: CurrentUser) -> Response:
    """Delete a finished job and its files (409 while queued or running)."""
    with ctx.db.writing() as session:
        service.delete_job(session, ctx.settings, user=user, job_id=job_id)
    return Response(status_code=204)


@router.get("/{job_id}/artifacts", response_model=ArtifactList)
def list_artifacts(job_id: str, ctx: Ctx, user: CurrentUser) -> ArtifactList:
    with ctx.db.reading() as session:
        rows = artifact_service.list_artifacts(session, user=user, job_id=job_id)
        return artifact_list(session, job_id, rows)


@router.get("/{job_id}/artifacts/{name:path}", response_class=FileResponse)
def download_artifact(job_id: str, name: str, ctx: Ctx, user: CurrentUser) -> FileResponse:
    """Download a registered artifact; supports `Range`."""
    with ctx.db.reading() as session:
        artifact, path = artifact_service.artifact_file(
            session, ctx.settings, user=user, job_id=job_id, name=name
        )
    return FileResponse(
        path,
        filename=path.name,
        media_type="application/octet-stream",
        headers={"X-Checksum-Sha256": artifact.sha256},
    )
