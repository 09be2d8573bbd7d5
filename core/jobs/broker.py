"""The queue's transport: Celery, used here only as a client (send a job id, ping).

The worker imports ``celery_config`` so both sides agree on every broker setting.
"""

from __future__ import annotations

from typing import Any

from celery import Celery

from core.settings import Settings

RUN_JOB_TASK = "lorabox.run_job"


def celery_config(settings: Settings) -> dict[str, Any]:
    options: dict[str, Any] = {}
    if settings.broker_url.startswith(("redis://", "rediss://")):
        options["visibility_timeout"] = settings.broker_visibility_timeout_s
    return {
        "broker_url": settings.broker_url,
        "broker_transport_options": options,
        "broker_connection_retry_on_startup": True,
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
