"""Webhooks: a signed JSON POST to the job's ``notify_url`` when it ends.

The job row is the outbox: a job submitted with a URL is ``notify_status = "pending"`` and
any API process's dispatcher delivers it once the job has finished, however it ended (worker,
queue cancel, recovery), retrying with exponential backoff. A delivery is claimed by moving
``notify_next_at`` forward in a conditional update, so two API processes never both send it.

Each POST is signed twice (docs/webhooks.md tells receivers how to check either):
``X-Lorabox-Signature`` over the body alone, as before, and the Standard Webhooks scheme
(spec/standard-webhooks.md, "Signature scheme" and "Webhook headers", in the
standard-webhooks/standard-webhooks repository): ``webhook-signature`` over
``id.timestamp.body``, so a receiver can refuse a stale timestamp and an id it has seen.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import logging
import secrets
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

import anyio
import httpx
import sqlalchemy as sa
from sqlalchemy.orm import Session
from standardwebhooks import Webhook

from core.db import Database
from core.db.tables import FINISHED, Job, User, utcnow
from core.jobs.events import record_event
from core.jobs.service import error_of
from core.settings import Settings
from core.watch.allowlist import notify_url_problem

log = logging.getLogger(__name__)
SIGNATURE_HEADER = "X-Lorabox-Signature"
BATCH = 20


def ensure_secret(session: Session, user: User) -> str:
    if user.webhook_secret is None:
        user.webhook_secret = secrets.token_hex(32)
    return user.webhook_secret


def signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def standard_secret(secret: str) -> str:
    """The user's secret in Standard Webhooks form: ``whsec_`` + base64 of its bytes.

    The same 32 random bytes as ``secret`` (``token_hex(32)``), re-encoded rather than a
    second secret to store: the spec allows reusing a legacy signing secret ("Migrating to
    Standard Webhooks"), and 32 bytes meet its "at least 24 bytes" for HMAC-SHA256 keys.
    """
    return "whsec_" + base64.b64encode(bytes.fromhex(secret)).decode()


def delivery_id(job_id: str) -> str:
    """``webhook-id``: one per job end, the same on every retry of it, so a receiver can use
    it as an idempotency key (spec: "Webhook metadata"). No ``.`` in it: the signed content
    is ``id.timestamp.body``, and the spec asks that the id cannot contain the delimiter."""
    return f"msg_{job_id}_finished"


def signed_headers(secret: str, msg_id: str, body: bytes, now: datetime) -> dict[str, str]:
    """Both signatures' headers, for one attempt sent at ``now`` (the spec's
    ``webhook-timestamp`` is the attempt's time, so a retry carries a new one)."""
    return {
        SIGNATURE_HEADER: signature(secret, body),
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": Webhook(standard_secret(secret)).sign(msg_id, now, body),
    }


@dataclass(frozen=True)
class Delivery:
    job_id: str
    url: str
    body: bytes
    secret: str
    attempt: int

    @property
    def msg_id(self) -> str:
        return delivery_id(self.job_id)


def webhook_body(job: Job, attempt: int) -> bytes:
    def when(value: Any) -> str | None:
        return value.isoformat() if value is not None else None

    payload = {
        "event": "job.finished",
        "delivery_attempt": attempt,
        "job": {
            "id": job.id,
            "name": job.name,
            "status": job.status,
            "error": error_of(job),
            "base_model": job.base_model,
            "created_at": when(job.created_at),
            "started_at": when(job.started_at),
            "finished_at": when(job.finished_at),
            "url": f"/v1/jobs/{job.id}",
        },
    }
    return json.dumps(payload, separators=(",", ":")).encode()


def _due(now: Any) -> Any:
    return sa.and_(
        Job.notify_status == "pending",
        Job.status.in_([s.value for s in FINISHED]),
        sa.or_(Job.notify_next_at.is_(None), Job.notify_next_at <= now),
    )


def claim_due(db: Database, settings: Settings) -> list[Delivery]:
    """Claims up to BATCH due deliveries for this process (their retry time moves past the
    timeout, so a crash mid-send only delays the next try)."""
    now = utcnow()
    lease = now + timedelta(seconds=settings.webhook_timeout_s + 30)
    claimed: list[Delivery] = []
    with db.writing() as session:
        jobs = session.scalars(sa.select(Job).where(_due(now)).limit(BATCH)).all()
        for job in jobs:
            result = session.execute(
                sa.update(Job)
                .where(Job.id == job.id, _due(now))
                .values(notify_next_at=lease, notify_attempts=Job.notify_attempts + 1)
                .execution_options(synchronize_session=False)
            )
            if result.rowcount != 1:  # type: ignore[attr-defined]
                continue
            owner = session.get(User, job.owner_id)
            assert owner is not None and job.notify_url is not None
            attempt = job.notify_attempts + 1
            body = webhook_body(job, attempt)
            claimed.append(Delivery(job.id, job.notify_url, body, ensure_secret(session, owner),
                                    attempt))  # fmt: skip
    return claimed


def record_result(
    db: Database, settings: Settings, delivery: Delivery, status_code: int | None, error: str
) -> None:
    delivered = status_code is not None and 200 <= status_code < 300
    values: dict[str, Any] = {}
    if delivered:
        values["notify_status"] = "delivered"
    elif delivery.attempt >= settings.webhook_max_attempts:
        values["notify_status"] = "failed"
    else:
        delay = settings.webhook_backoff_s * 2 ** (delivery.attempt - 1)
        values["notify_next_at"] = utcnow() + timedelta(seconds=delay)
    with db.writing() as session:
        session.execute(sa.update(Job).where(Job.id == delivery.job_id).values(**values))
        data = {"attempt": delivery.attempt, "status_code": status_code, "delivered": delivered,
                "error": error or None}  # fmt: skip
        record_event(session, delivery.job_id, "webhook", data, attempt=0)


async def deliver(client: httpx.AsyncClient, db: Database, settings: Settings, d: Delivery) -> None:
    status_code, error = None, ""
    problem = notify_url_problem(settings, d.url)  # the allow-list may have shrunk since
    if problem:
        error = problem
    else:
        headers = {
            "Content-Type": "application/json",
            "X-Lorabox-Event": "job.finished",
            "User-Agent": "lorabox-webhook",
            **signed_headers(d.secret, d.msg_id, d.body, utcnow()),
        }
        try:
            response = await client.post(d.url, content=d.body, headers=headers)
            status_code = response.status_code
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"
    if problem:  # retrying can't help: give up now
        d = replace(d, attempt=settings.webhook_max_attempts)
    await anyio.to_thread.run_sync(record_result, db, settings, d, status_code, error)


async def dispatch_forever(db: Database, settings: Settings) -> None:
    # No redirects: a redirect could point the server at a host the allow-list forbids.
    async with httpx.AsyncClient(follow_redirects=False, timeout=settings.webhook_timeout_s) as c:
        while True:
            try:
                due = await anyio.to_thread.run_sync(claim_due, db, settings)
                await asyncio.gather(*(deliver(c, db, settings, d) for d in due))
            except Exception:  # a database hiccup must not end the dispatcher
                log.exception("webhook dispatch failed; retrying")
            await asyncio.sleep(settings.webhook_poll_interval_s)


def start_dispatcher(db: Database, settings: Settings) -> asyncio.Task[None] | None:
    """The background sender, or None when webhooks are off."""
    if not settings.webhook_hosts:
        return None
    return asyncio.create_task(dispatch_forever(db, settings), name="webhooks")


async def stop_dispatcher(task: asyncio.Task[None] | None) -> None:
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
