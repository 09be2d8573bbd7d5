"""Webhooks: a signed POST when a job ends, retried with backoff, only to allowed hosts."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import sqlalchemy as sa

from core.db import Database, Job
from core.db.migrate import downgrade, upgrade
from tests.watched_job import insert_job

FAST = {"webhook_allowed_hosts": "127.0.0.1", "webhook_backoff_s": 0.2,
        "webhook_poll_interval_s": 0.1}  # fmt: skip


class Receiver:
    """A real HTTP server on 127.0.0.1 that records each request's raw bytes."""

    def __init__(self, statuses: list[int]) -> None:
        self.statuses, self.received = statuses, []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                raw = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.received.append((dict(self.headers), raw))
                status = (
                    receiver.statuses.pop(0) if len(receiver.statuses) > 1 else receiver.statuses[0]
                )
                self.send_response(status)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait_for(self, count: int, timeout_s: float = 30) -> None:
        deadline = time.monotonic() + timeout_s
        while len(self.received) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(self.received) >= count, self.received


@pytest.fixture
def receiver():
    made: list[Receiver] = []

    def build(*statuses: int) -> Receiver:
        made.append(Receiver(list(statuses) or [200]))
        return made[-1]

    yield build
    for r in made:
        r.server.shutdown()


def _verified(secret: str, headers: dict[str, str], raw: bytes) -> dict:
    expected = "sha256=" + hmac.new(secret.encode(), raw, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(headers["X-Lorabox-Signature"], expected)
    return json.loads(raw)


def _notify_state(settings, job_id: str) -> tuple[str, int]:
    db = Database(settings.database_url, pool_size=1)
    with db.reading() as session:
        job = session.get(Job, job_id)
        state = (job.notify_status, job.notify_attempts)
    db.dispose()
    return state


def _submit_problems(service, notify_url: str) -> list[dict]:
    body = {"dataset_id": "none", "base_model": "none", "params": {}, "notify_url": notify_url}
    response = service.submit("alice", body)
    assert response.status_code == 422
    return [p for p in response.json()["detail"] if p["loc"] == ["body", "notify_url"]]


def test_a_host_off_the_allow_list_is_refused_at_submit(fresh_service_with):
    service = fresh_service_with(webhook_allowed_hosts="127.0.0.1, hooks.example.com")
    for url in ("http://10.0.0.1/x", "http://localhost/x", "ftp://127.0.0.1/x",
                "http://user:pw@127.0.0.1/x", "/relative"):  # fmt: skip
        assert _submit_problems(service, url), url
    assert _submit_problems(service, "https://HOOKS.example.com/x") == []


def test_webhooks_are_off_by_default(fresh_service):
    [problem] = _submit_problems(fresh_service, "http://127.0.0.1/x")
    assert "turned off" in problem["msg"]


def test_me_shows_a_stable_per_user_secret(fresh_service):
    first = fresh_service.client.get("/v1/me", headers=fresh_service.as_("alice")).json()
    again = fresh_service.client.get("/v1/me", headers=fresh_service.as_("alice")).json()
    bob = fresh_service.client.get("/v1/me", headers=fresh_service.as_("bob")).json()
    assert first["name"] == "alice" and len(first["webhook_secret"]) == 64
    assert first["webhook_secret"] == again["webhook_secret"] != bob["webhook_secret"]


def test_a_job_cancelled_in_the_queue_is_posted_signed_and_retried_until_accepted(
    fresh_service_with, receiver
):
    service = fresh_service_with(**FAST)
    hook = receiver(500, 503, 204)
    job_id = insert_job(service.settings, status="queued", notify_url=hook.url,
                        notify_status="pending")  # fmt: skip
    secret = service.client.get("/v1/me", headers=service.as_("alice")).json()["webhook_secret"]
    assert service.client.post(f"/v1/jobs/{job_id}/cancel", headers=service.as_("alice"))
    hook.wait_for(3)
    bodies = [_verified(secret, headers, raw) for headers, raw in hook.received]
    assert [b["delivery_attempt"] for b in bodies] == [1, 2, 3]
    assert bodies[0]["event"] == "job.finished"
    assert bodies[0]["job"]["id"] == job_id and bodies[0]["job"]["status"] == "cancelled"
    deadline = time.monotonic() + 10
    while _notify_state(service.settings, job_id)[0] != "delivered":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    time.sleep(0.5)
    assert len(hook.received) == 3  # delivered once accepted: no further posts


def test_delivery_gives_up_after_the_last_attempt(fresh_service_with, receiver):
    service = fresh_service_with(**FAST, webhook_max_attempts=3)
    hook = receiver(500)
    job_id = insert_job(service.settings, status="failed", notify_url=hook.url,
                        notify_status="pending")  # fmt: skip
    hook.wait_for(3)
    deadline = time.monotonic() + 10
    while _notify_state(service.settings, job_id) != ("failed", 3):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    time.sleep(1)
    assert len(hook.received) == 3


def test_the_webhook_migration_runs_down_and_up_on_sqlite_and_postgres(tmp_path, postgres_url):
    for url in (f"sqlite:///{tmp_path / 'm.db'}", postgres_url):
        upgrade(url)
        downgrade(url, "0001")
        engine = sa.create_engine(url)
        assert "notify_url" not in {c["name"] for c in sa.inspect(engine).get_columns("jobs")}
        engine.dispose()
        upgrade(url)
        engine = sa.create_engine(url)
        columns = {c["name"] for c in sa.inspect(engine).get_columns("jobs")}
        users = {c["name"] for c in sa.inspect(engine).get_columns("users")}
        engine.dispose()
        assert {"notify_url", "notify_status", "notify_attempts", "notify_next_at"} <= columns
        assert "webhook_secret" in users


@pytest.mark.slow
def test_a_job_that_fails_in_the_worker_posts_its_error(
    watch_stack, watched, receiver, watch_job_body
):
    hook = receiver(200)
    body = watch_job_body(model="corrupt-sdxl") | {"notify_url": hook.url}
    job = watch_stack.submit(body)
    secret = watch_stack.get("/v1/me").json()["webhook_secret"]
    hook.wait_for(1, timeout_s=120)
    headers, raw = hook.received[0]
    sent = _verified(secret, headers, raw)
    assert sent["job"]["id"] == job["id"] and sent["job"]["status"] == "failed"
    ended = watch_stack.job(job["id"])
    assert sent["job"]["error"] == ended["error"] and ended["error"]["code"]
    assert _notify_state(watch_stack.settings, job["id"]) == ("delivered", 1)
