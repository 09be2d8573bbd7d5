"""The queue's transport: Celery, used here only as a client (send a job id, ping).

The worker imports ``celery_config`` so both sides agree on every broker setting.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

import sqlalchemy as sa
from celery import Celery

from core.db import Database
from core.jobs.queue import mark_unsent
from core.settings import Settings

log = logging.getLogger(__name__)

RUN_JOB_TASK = "lorabox.run_job"


def celery_config(settings: Settings) -> dict[str, Any]:
    options: dict[str, Any] = {}
    if settings.broker_url.startswith(("redis://", "rediss://")):
        options["visibility_timeout"] = settings.broker_visibility_timeout_s
        # redis-py waits forever on a Redis that accepts and never answers: these bound every
        # read and write (kombu passes them to redis-py), docs/reliability.md, "Broker hangs".
        options["socket_timeout"] = settings.broker_timeout_s
        options["socket_connect_timeout"] = settings.broker_timeout_s
    return {
        "broker_url": settings.broker_url,
        "broker_transport_options": options,
        "broker_connection_timeout": settings.broker_timeout_s,
        "broker_connection_retry_on_startup": True,
        # No retry inside a send (kombu's default is three, each a socket timeout on a broker
        # that hangs, and a reconnect's handshake another): a failed send leaves the job to the
        # reconciler's next pass (send_or_defer), so a submit never waits more than one timeout.
        "task_publish_retry_policy": {"max_retries": 0},
        "task_default_queue": settings.queue_name,
        "task_ignore_result": True,
        "task_acks_late": True,  # a job's message stays unacked until the job has finished
        "task_reject_on_worker_lost": False,
        "worker_prefetch_multiplier": 1,  # one job per GPU in hand, the rest stay in order
        "worker_concurrency": 1,
        "worker_hijack_root_logger": False,
    }


class Broker:
    def __init__(self, settings: Settings) -> None:
        self._queue = settings.queue_name
        self.celery = Celery("lorabox-api", set_as_current=False)
        self.celery.conf.update(celery_config(settings))

    def enqueue(self, job_id: str) -> None:
        self.celery.send_task(RUN_JOB_TASK, args=[job_id], queue=self._queue)

    def ping(self, timeout_s: float = 2.0) -> None:
        with self.celery.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=timeout_s)

    def close(self) -> None:
        self.celery.close()


def send_or_defer(broker: Broker, db: Database, settings: Settings, job_id: str) -> bool:
    """Sends the job's message; when the broker can't take it (down, or hanging past its
    socket timeouts), the job is left for the reconciler's next pass. The row is the truth."""
    try:
        broker.enqueue(job_id)
        return True
    except Exception as exc:  # noqa: BLE001 - any broker failure: the reconciler re-sends
        log.warning("could not send job %s to the broker (%s); the reconciler will", job_id, exc)
    with contextlib.suppress(sa.exc.OperationalError), db.writing() as session:
        mark_unsent(session, settings, job_id=job_id)
    return False
