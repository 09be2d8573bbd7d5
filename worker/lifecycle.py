"""The worker process's lifecycle: its context, the reconciler thread, and shutdown.

On SIGTERM or SIGINT Celery starts a warm shutdown and waits for the running task; we also
flag it, so the supervisor stops the trainer within a step and hands the job back to the
queue instead of training on for hours (docs/reliability.md, graceful stop).
"""

from __future__ import annotations

import atexit
import logging
from functools import cache
from typing import Any

from celery import signals

from worker.heartbeat import Heartbeat, start_heartbeat
from worker.reconciler import Reconciler
from worker.runner import WorkerContext, join_local_runs, wake_locally
from worker.supervisor import shutdown_requested
from worker.trainer_process import stop_server, warm_up


@cache
def context() -> WorkerContext:
    return WorkerContext.from_settings()


log = logging.getLogger(__name__)
_heartbeat: list[Heartbeat] = []  # the one started at worker_ready


@cache
def reconciler() -> Reconciler:
    return Reconciler(context().settings, wake=lambda: wake_locally(context()))


@signals.worker_ready.connect
def _start_reconciler(**_: Any) -> None:
    reconciler().start()
    warm_up(context().settings.trainer_start_method)
    # After the warm-up (a CPU host's probe forks from the fork server) and before the first
    # job: the worker's row says what it has from the start (worker/heartbeat.py).
    try:
        _heartbeat.append(start_heartbeat(context()))
    except Exception:  # noqa: BLE001 - a worker that can't report still trains
        log.exception("the worker's heartbeat could not start; it will not be counted")
    context().ready.set()  # the reconciler may wake this worker now (worker/runner.py)


@signals.worker_shutting_down.connect
def _hand_back_on_shutdown(**_: Any) -> None:
    shutdown_requested.set()
    reconciler().stop()
    while _heartbeat:
        _heartbeat.pop().stop()


@signals.worker_shutdown.connect
def _stop_trainer_server(**_: Any) -> None:
    # A job the reconciler's local wake runs is no Celery task: wait for its hand-back too.
    join_local_runs(context(), context().settings.lease_timeout_s)
    stop_server()  # the running job has been handed back by now


atexit.register(stop_server)  # a cold shutdown sends no worker_shutdown
