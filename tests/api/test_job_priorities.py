"""Priorities, holds and quotas at the API (docs/scheduling.md, "Priorities and holds",
"Quotas"): who may set what, 409 once a job runs, an event per change, a user's GPU time in
GET /v1/me, the admin's quota route, and the GPU-time figures in /metrics. No worker runs."""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families

from core.db import Database, Job, JobEvent, User
from core.db.tables import GpuUsage, utcnow


def _patch(service, user: str, job_id: str, **body):
    return service.client.patch(f"/v1/jobs/{job_id}", headers=service.as_(user), json=body)


def _kinds(service, job_id: str) -> list[tuple[str, dict]]:
    db = Database(service.settings.database_url, pool_size=1)
    with db.reading() as session:
        rows = session.query(JobEvent).filter_by(job_id=job_id).order_by(JobEvent.id).all()
        kinds = [(e.kind, e.data) for e in rows if e.kind != "queued"]
    db.dispose()
    return kinds


def test_users_submit_low_or_normal_and_only_admins_high(service, job_body):
    low = service.submit("alice", job_body | {"priority": "low"})
    assert low.status_code == 202 and low.json()["priority"] == "low"
    plain = service.submit("alice", job_body).json()
    assert (plain["priority"], plain["held"], plain["preemptions"]) == ("normal", False, 0)
    refused = service.submit("alice", job_body | {"priority": "high"})
    assert refused.status_code == 403, refused.text
    assert "priority" in refused.json()["detail"] and "admin" in refused.json()["detail"]
    assert service.submit("admin", job_body | {"priority": "high"}).json()["priority"] == "high"
    bad = service.submit("alice", job_body | {"priority": "urgent"})
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["body", "priority"]


def test_owners_hold_release_and_lower_their_queued_jobs_each_change_an_event(service, job_body):
    job_id = service.submit("alice", job_body).json()["id"]
    held = _patch(service, "alice", job_id, held=True)
    assert held.status_code == 200 and held.json()["held"] is True
    assert _patch(service, "alice", job_id, held=True).status_code == 200  # again: no new event
    lowered = _patch(service, "alice", job_id, priority="low", held=False).json()
    assert (lowered["priority"], lowered["held"]) == ("low", False)
    assert _kinds(service, job_id) == [
        ("held", {"by": "alice"}),
        ("priority_changed", {"priority": "low", "by": "alice"}),
        ("released", {"by": "alice"}),
    ]
    raised = _patch(service, "alice", job_id, priority="high")
    assert raised.status_code == 403 and "priority" in raised.json()["detail"]
    assert _patch(service, "bob", job_id, held=True).status_code == 404  # not bob's to see
    assert _patch(service, "admin", job_id, priority="high").json()["priority"] == "high"
    # An admin's high stays unless an admin changes it; the owner may still lower it.
    assert _patch(service, "alice", job_id, priority="normal").json()["priority"] == "normal"


def test_the_patch_body_must_name_a_field_and_a_running_job_can_t_be_held(service, job_body):
    job_id = service.submit("alice", job_body).json()["id"]
    for body, loc in (({}, ["body"]), ({"held": None}, ["body", "held"]),
                      ({"priority": "low", "x": 1}, ["body", "x"])):  # fmt: skip
        response = service.client.patch(f"/v1/jobs/{job_id}", headers=service.as_("alice"),
                                        json=body)  # fmt: skip
        assert response.status_code == 422, body
        assert response.json()["detail"][0]["loc"] == loc
    db = Database(service.settings.database_url, pool_size=1)
    with db.writing() as session:
        session.get(Job, job_id).status = "running"
    db.dispose()
    refused = _patch(service, "alice", job_id, held=True)
    assert refused.status_code == 409
    assert "running" in refused.json()["detail"] and "cancel or stop" in refused.json()["detail"]


def _usage(service, user: str, seconds: float, ago: float, open_: bool = False) -> None:
    db = Database(service.settings.database_url, pool_size=1)
    with db.writing() as session:
        user_id = session.query(User).filter_by(name=user).one().id
        start = utcnow() - timedelta(seconds=ago)
        end = None if open_ else start + timedelta(seconds=seconds)
        session.add(GpuUsage(user_id=user_id, job_id="j" * 32, attempt=1, started_at=start,
                             ended_at=end))  # fmt: skip
    db.dispose()


def test_admins_set_quotas_and_users_see_usage_and_budget_in_me(service):
    _usage(service, "alice", 100, ago=1000)  # outside a 500 s window
    _usage(service, "alice", 50, ago=200)  # inside
    me = service.client.get("/v1/me", headers=service.as_("alice")).json()["gpu_time"]
    assert me["quota_gpu_seconds"] is None and me["window_s_used"] is None
    assert not me["over_quota"] and 149 < me["fair_share_s"] < 150  # a day's half-life

    path = "/v1/users/alice/quota"
    body = {"gpu_seconds": 40, "window_s": 500}
    assert service.client.put(path, headers=service.as_("bob"), json=body).status_code == 403
    set_ = service.client.put(path, headers=service.as_("admin"), json=body)
    assert set_.status_code == 200, set_.text
    assert set_.json()["gpu_time"]["quota_gpu_seconds"] == 40
    me = service.client.get("/v1/me", headers=service.as_("alice")).json()["gpu_time"]
    assert (me["quota_window_s"], round(me["window_s_used"]), me["over_quota"]) == (500, 50, True)
    bad = service.client.put(path, headers=service.as_("admin"), json={"gpu_seconds": -1})
    assert bad.status_code == 422
    assert {tuple(p["loc"]) for p in bad.json()["detail"]} == {
        ("body", "gpu_seconds"), ("body", "window_s")
    }  # fmt: skip
    missing = service.client.put("/v1/users/nobody/quota", headers=service.as_("admin"), json=body)
    assert missing.status_code == 404
    lifted = service.client.delete(path, headers=service.as_("admin")).json()["gpu_time"]
    assert lifted["quota_gpu_seconds"] is None and not lifted["over_quota"]


def test_metrics_count_each_user_s_gpu_seconds_and_queue_waits(service, job_body):
    job_id = service.submit("alice", job_body).json()["id"]
    _usage(service, "alice", 30, ago=100)
    _usage(service, "bob", 0, ago=20, open_=True)  # running now: counts up to the scrape
    db = Database(service.settings.database_url, pool_size=1)
    with db.writing() as session:
        job = session.get(Job, job_id)
        session.add(GpuUsage(user_id=job.owner_id, job_id=job_id, attempt=1,
                             started_at=job.created_at + timedelta(seconds=90),
                             ended_at=job.created_at + timedelta(seconds=95)))  # fmt: skip
        session.add(GpuUsage(user_id=job.owner_id, job_id=job_id, attempt=2,
                             started_at=job.created_at + timedelta(seconds=200),
                             ended_at=job.created_at + timedelta(seconds=210)))  # fmt: skip
    db.dispose()
    text = service.client.get("/metrics").text
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert samples[("lorabox_user_gpu_seconds_total", (("user", "alice"),))] == 30 + 5 + 10
    assert 20 <= samples[("lorabox_user_gpu_seconds_total", (("user", "bob"),))] < 60
    # One job was claimed (twice): its wait is to the first claim, 90 s after submission.
    assert samples[("lorabox_queue_wait_seconds_count", ())] == 1
    assert samples[("lorabox_queue_wait_seconds_sum", ())] == 90
    assert samples[("lorabox_queue_wait_seconds_bucket", (("le", "60.0"),))] == 0
    assert samples[("lorabox_queue_wait_seconds_bucket", (("le", "300.0"),))] == 1


def _wake_messages(service) -> int:
    """Wake-ups waiting in the embedded broker (kombu's SQLAlchemy transport: one row each)."""
    engine = sa.create_engine(service.settings.broker_url.removeprefix("sqla+"))
    with engine.connect() as connection:
        count = connection.execute(sa.text("SELECT count(*) FROM kombu_message")).scalar_one()
    engine.dispose()
    return int(count)


def test_a_release_and_a_resume_each_wake_a_worker_at_once(service, job_body):
    """Without these wake-ups an idle worker would start the job only at its reconciler's
    next pass (docs/reliability.md, "Reconciler")."""
    job_id = service.submit("alice", job_body).json()["id"]
    sent = _wake_messages(service)  # the submit's
    assert _patch(service, "alice", job_id, held=True).status_code == 200
    assert _wake_messages(service) == sent  # a hold wakes nobody
    assert _patch(service, "alice", job_id, held=False).status_code == 200
    assert _wake_messages(service) == sent + 1
    admin = service.as_("admin")
    assert service.client.post("/v1/queue/pause", headers=admin).status_code == 200
    assert _wake_messages(service) == sent + 1
    assert service.client.post("/v1/queue/resume", headers=admin).json() == {"paused": False}
    assert _wake_messages(service) == sent + 2  # no worker counted yet: one wake-up anyway
