"""`GET /v1/jobs/{id}/events`: the event log as SSE, in order, resumable, on SQLite and
Postgres."""

from __future__ import annotations

import threading
import time

import pytest

from core.db import Database, Job, JobEvent
from core.db.migrate import upgrade
from core.settings import Settings
from tests.api.sse import parse

LOG = [
    ("queued", {"status": "queued"}),
    ("started", {"attempt": 1}),
    ("phase", {"phase": "loading"}),
    ("training_started", {"total_steps": 4, "total_epochs": 2, "batches_per_epoch": 2}),
    ("progress", {"phase": "training", "step": 1, "loss": 0.5}),
    ("epoch", {"epoch": 1, "avg_loss": 0.5}),
    ("artifact", {"path": "samples/e1.png", "kind": "sample", "epoch": 1, "step": 2}),
    ("progress", {"phase": "training", "step": 2, "loss": 0.4}),
    ("artifact", {"path": "last.safetensors", "kind": "lora", "epoch": 2, "step": 4}),
]
PLAN = {"total_steps": 4, "batches_per_epoch": 2, "epochs": 2, "warmup_steps": 0,
        "images_x_repeats": 2, "buckets": [], "warnings": []}  # fmt: skip
SHOWN_TYPES = ["phase", "phase", "progress", "sample", "progress", "artifact"]


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def events_service(request, tmp_path_factory, make_service):
    """One app per database kind (Postgres: the session's fresh database)."""
    tmp_path = tmp_path_factory.mktemp(f"events-{request.param}")
    if request.param == "postgres":
        url = request.getfixturevalue("postgres_url")
    else:
        url = f"sqlite:///{tmp_path / 'lorabox.db'}"
    upgrade(url)
    settings = Settings(home=tmp_path, models_dir=tmp_path, database_url=url,
                        events_poll_interval_s=0.05)  # fmt: skip
    gen = make_service(settings)
    service = next(gen)
    yield service
    gen.close()


def _job(service, owner: str = "alice", entries=LOG, status: str = "running") -> str:
    from core.db import User

    db = Database(service.settings.database_url, pool_size=1)
    with db.writing() as session:
        user = session.query(User).filter_by(name=owner).one()
        job = Job(owner_id=user.id, base_model="m", dataset_id="d", params={}, config={},
                  resolved={}, plan=PLAN, status=status)  # fmt: skip
        session.add(job)
        session.flush()
        job_id = job.id
        for kind, data in entries:
            session.add(JobEvent(job_id=job_id, attempt=1, kind=kind, data=data))
    db.dispose()
    return job_id


def _finish(service, job_id: str, delay_s: float = 0.0) -> None:
    time.sleep(delay_s)
    db = Database(service.settings.database_url, pool_size=1)
    with db.writing() as session:
        session.add(JobEvent(job_id=job_id, attempt=1, kind="progress", data={"step": 4}))
        session.get(Job, job_id).status = "succeeded"
        session.add(JobEvent(job_id=job_id, attempt=1, kind="finished",
                             data={"status": "succeeded"}))  # fmt: skip
    db.dispose()


def _stream(service, job_id: str, user: str = "alice", **headers: str):
    with service.client.stream(
        "GET", f"/v1/jobs/{job_id}/events", headers=service.as_(user) | headers
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        return parse(response.iter_lines())


def test_the_stream_delivers_new_entries_live_in_order_and_ends_after_finished(events_service):
    job_id = _job(events_service)
    writer = threading.Thread(target=_finish, args=(events_service, job_id, 0.5))
    writer.start()
    events = _stream(events_service, job_id)
    writer.join()
    assert [e.type for e in events] == [*SHOWN_TYPES, "progress", "finished"]
    assert [e.id for e in events] == sorted({e.id for e in events})
    assert events[-1].data == {"status": "succeeded"}
    assert events[3].data == {"name": "samples/e1.png", "kind": "sample", "epoch": 1, "step": 2}
    assert events[1].data["phase"] == "training" and events[1].data["total_steps"] == 4


def test_resuming_after_any_event_id_gives_the_rest_with_no_gap_and_no_repeat(events_service):
    job_id = _job(events_service)
    _finish(events_service, job_id)
    full = _stream(events_service, job_id)
    for i, seen in enumerate(full):
        rest = _stream(events_service, job_id, **{"Last-Event-ID": str(seen.id)})
        assert rest == full[i + 1 :]
    by_query = events_service.client.get(
        f"/v1/jobs/{job_id}/events?after={full[2].id}", headers=events_service.as_("alice")
    )
    assert parse(by_query.text.splitlines()) == full[3:]


def test_a_job_cancelled_in_the_queue_streams_finished(events_service):
    job_id = _job(events_service, entries=[("queued", {})], status="queued")
    response = events_service.client.post(
        f"/v1/jobs/{job_id}/cancel", headers=events_service.as_("alice")
    )
    assert response.json()["status"] == "cancelled"
    events = _stream(events_service, job_id)
    assert [e.type for e in events] == ["finished"] and events[0].data["status"] == "cancelled"


def test_another_users_stream_is_not_found_and_bad_ids_are_refused(events_service):
    job_id = _job(events_service)
    url = f"/v1/jobs/{job_id}/events"
    client = events_service.client
    assert client.get(url, headers=events_service.as_("bob")).status_code == 404
    bad = client.get(url, headers=events_service.as_("alice") | {"Last-Event-ID": "x"})
    assert bad.status_code == 422
    assert client.get(url).status_code == 401


@pytest.mark.slow
def test_a_real_job_streams_its_progress_artifacts_and_end(watch_stack, watched):
    url = f"/v1/jobs/{watched.job['id']}/events"
    with watch_stack.client.stream("GET", url, headers=watch_stack.as_()) as response:
        events = parse(response.iter_lines())
    types = [e.type for e in events]
    assert types[-1] == "finished" and types.count("finished") == 1
    assert {"phase", "progress", "artifact"} <= set(types)
    assert events[-1].data["status"] == "succeeded"
    last_progress = [e for e in events if e.type == "progress"][-1].data
    assert last_progress["step"] == last_progress["total_steps"]
    assert {"loss", "avg_loss", "lr", "eta_s", "elapsed_s", "s_per_step"} <= set(last_progress)
    assert "watched.safetensors" in {e.data["name"] for e in events if e.type == "artifact"}
    middle = events[len(events) // 2].id
    with watch_stack.client.stream(
        "GET", url, headers=watch_stack.as_() | {"Last-Event-ID": str(middle)}
    ) as response:
        assert parse(response.iter_lines()) == [e for e in events if e.id > middle]
