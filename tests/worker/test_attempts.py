"""What a new attempt of a job starts from: the listing made true again, and the newest
training state that still exists."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa
from fastapi.testclient import TestClient

from api.app import create_app
from core.db import Artifact, Job, JobEvent
from core.jobs.artifacts import register_artifact
from core.jobs.recovery import release
from core.settings import Settings
from tests.worker.conftest import prepare
from worker.runner import WorkerContext, claim, run_job, trainer_launch


def _queued_job(settings: Settings, zip_bytes: bytes, params: dict[str, Any]) -> str:
    tokens = prepare(settings)
    headers = {"Authorization": f"Bearer {tokens['alice']}"}
    with TestClient(create_app(settings)) as client:
        response = client.post(
            "/v1/datasets", headers=headers, files={"file": ("d.zip", zip_bytes)}
        )
        body = {"dataset_id": response.json()["id"], "base_model": "tiny-sdxl", "params": params}
        response = client.post("/v1/jobs", headers=headers, json=body)
        assert response.status_code == 202, response.text
        return str(response.json()["id"])


def test_a_new_attempt_unlists_files_that_are_gone_and_resumes_from_the_newest_state_left(
    tmp_path: Path, tiny_models_dir: Path, e2e_zip: bytes, e2e_payload: Any
) -> None:
    settings = Settings(home=tmp_path / "home", models_dir=tiny_models_dir)
    job_id = _queued_job(settings, e2e_zip, e2e_payload(save_state=True, save_every_n_steps=1))
    ctx = WorkerContext.from_settings(settings)
    assert claim(ctx, job_id) == 1
    folder = settings.jobs_dir / job_id
    (folder / "tensorboard").mkdir(parents=True)
    board = "tensorboard/events.out.tfevents.1"
    (folder / board).write_bytes(b"events")
    with ctx.db.writing() as session:
        register_artifact(session, settings, job_id=job_id, name=board, kind="tensorboard")
        for step in (1, 2):
            name = f"last-step{step:08d}-state.safetensors"
            (folder / name).write_bytes(b"state")
            register_artifact(session, settings, job_id=job_id, name=name, kind="state", step=step)
    # Attempt 1's worker died; its orphaned trainer deleted the step-2 state unrecorded.
    (folder / "last-step00000002-state.safetensors").unlink()
    with ctx.db.writing() as session:
        release(session, settings, job_id=job_id, attempt=1, reason="lease_expired", lost=True)

    assert claim(ctx, job_id) == 2
    first = "last-step00000001-state.safetensors"
    assert trainer_launch(ctx, job_id).job.resume_state == folder / first
    with ctx.db.reading() as session:
        listed = session.scalars(sa.select(Artifact.name).where(Artifact.job_id == job_id)).all()
        events = session.execute(
            sa.select(JobEvent.kind, JobEvent.data).where(
                JobEvent.job_id == job_id, JobEvent.attempt == 2
            )
        ).all()
    assert sorted(listed) == [first, board]
    lost = {"path": "last-step00000002-state.safetensors", "lost": True}
    assert ("artifact_removed", lost) in [tuple(row) for row in events]

    # Storage that isn't there (a volume not mounted) is not a loss: attempt 3 unlists nothing.
    folder.rename(folder.with_name("elsewhere"))
    with ctx.db.writing() as session:
        release(session, settings, job_id=job_id, attempt=2, reason="lease_expired", lost=True)
    assert claim(ctx, job_id) == 3
    with ctx.db.reading() as session:
        still = session.scalars(sa.select(Artifact.name).where(Artifact.job_id == job_id)).all()
    ctx.db.dispose()
    assert sorted(still) == [first, board]


def test_a_stored_config_this_version_cannot_read_fails_the_job_once_with_a_reason(
    tmp_path: Path, tiny_models_dir: Path, e2e_zip: bytes, e2e_payload: Any
) -> None:
    settings = Settings(home=tmp_path / "home", models_dir=tiny_models_dir)
    job_id = _queued_job(settings, e2e_zip, e2e_payload())
    ctx = WorkerContext.from_settings(settings)
    with ctx.db.writing() as session:  # as a row written by another version could be
        session.execute(sa.update(Job).where(Job.id == job_id).values(config={"bogus": 1}))

    def never_started(*_: Any) -> None:
        raise AssertionError("no trainer may start for an unreadable job")

    assert run_job(ctx, job_id, target=never_started) == "failed"
    with ctx.db.reading() as session:
        job = session.get(Job, job_id)
        assert job is not None
        assert (job.status, job.error_code, job.attempt) == ("failed", "invalid_job", 1)
        assert "can't be read" in (job.error_message or "")
