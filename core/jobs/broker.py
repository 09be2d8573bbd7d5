"""The queue's transport: Celery, used here only as a client (send a wake-up, ping).

A message names no job: it wakes one idle worker, which claims whatever the policy ranks
first (``core/jobs/claim.py``). So a lost message delays nothing past the reconciler's next
pass (it starts idle workers itself), and a duplicated or redelivered one starts nothing
twice (docs/reliability.md, "Claim"). The worker imports ``celery_config`` so both sides
agree on every broker setting.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery

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

    def wake(self) -> None:
        """One wake-up for one idle worker (no arguments: the database picks the job)."""
        self.celery.send_task(RUN_JOB_TASK, queue=self._queue)

    def ping(self, timeout_s: float = 2.0) -> None:
        with self.celery.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=timeout_s)

    def close(self) -> None:
        self.celery.close()


def send_or_defer(broker: Broker, for_job: str | None = None) -> bool:
    """Wakes one idle worker; when the broker can't take the message (down, or hanging past
    its socket timeouts) nothing is lost: the reconciler's next pass starts idle workers on
    eligible jobs itself (``worker/reconciler.py``). ``for_job`` only names, in the log, the
    job the wake-up is for."""
    try:
        broker.wake()
        return True
    except Exception as exc:  # noqa: BLE001 - any broker failure: the reconciler covers it
        log.warning("could not wake a worker for job %s (%s); the reconciler will", for_job, exc)
    return False
