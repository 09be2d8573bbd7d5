"""Sharing the GPU with real processes (docs/scheduling.md, docs/reliability.md "Claim"):
the policy decides which job a woken worker takes, on the embedded stack and on Postgres +
Redis; messages only wake workers, so none lost delays an eligible job past the reconcile
interval and none duplicated starts anything twice. Slow: real workers train the miniature
SDXL (one-step jobs)."""

from __future__ import annotations

import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from core.jobs.broker import RUN_JOB_TASK, Broker
from tests.conftest import fresh_postgres_database
from tests.worker.procs import Faults, fault_stack, wait_until

pytestmark = pytest.mark.slow


def _body(dataset: str, payload: Any, **params: Any) -> dict[str, Any]:
    return {"dataset_id": dataset, "base_model": "tiny-sdxl",
            "params": payload(epoch=1, save_every_n_epochs=0, **params)}  # fmt: skip


def _started_at(job: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(job["started_at"])


def _finished(f: Faults, job_id: str, timeout_s: float = 300) -> dict[str, Any]:
    """As the admin sees it (bob's jobs are not alice's to read)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job = f.stack.job(job_id, "admin")
        if job["status"] in ("succeeded", "failed", "cancelled"):
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} did not end:\n{f.stack.log_tail()}")


def _start_order(f: Faults, jobs: list[str]) -> list[str]:
    done = {job_id: _finished(f, job_id) for job_id in jobs}
    for job_id, job in done.items():
        assert (job["status"], job["attempt"]) == ("succeeded", 1), (job_id, job["error"])
    return sorted(jobs, key=lambda j: _started_at(done[j]))


def _once_each(f: Faults, jobs: list[str]) -> None:
    starts = f.starts()
    for job_id in jobs:
        assert len(starts[job_id]) == 1, (job_id, starts[job_id])
        assert [e[2] for e in f.events(job_id)].count("started") == 1


def _ready(f: Faults, count: int) -> None:
    """Until the last ``count`` workers' Celery consumers are ready (on one host CPU workers
    share one row in `workers`, so the table can't say)."""
    logs = f.stack.logs[-count:]
    wait_until(lambda: all(" ready." in log.read_text(errors="replace") for log in logs), 120,
               f"{count} workers ready")  # fmt: skip


def test_one_worker_starts_a_light_user_s_job_second_and_under_fifo_sixth(
    tmp_path: Path, tiny_models_dir: Path, e2e_zip: bytes, e2e_payload: Any
) -> None:
    with fault_stack(tmp_path, tiny_models_dir) as f:
        datasets = {user: f.stack.dataset(e2e_zip, user) for user in ("alice", "bob")}
        for scheduler, place in (("fair", 2), ("fifo", 6)):
            # All six wait before the worker starts: the order is the policy's alone.
            a = [f.stack.submit(_body(datasets["alice"], e2e_payload))["id"] for _ in range(5)]
            b = f.stack.submit(_body(datasets["bob"], e2e_payload), user="bob")["id"]
            worker = f.start_worker(LORABOX_SCHEDULER=scheduler)
            order = _start_order(f, [*a, b])
            assert order.index(b) + 1 == place, (scheduler, order.index(b) + 1)
            assert [j for j in order if j != b] == a  # alice's keep their submission order
            _once_each(f, [*a, b])
            worker.kill()
            worker.wait()


def test_two_workers_start_a_s_first_two_at_once_b_s_third_and_each_job_once(
    tmp_path: Path, tiny_models_dir: Path, e2e_zip: bytes, e2e_payload: Any, redis_url: str
) -> None:
    """Postgres + Redis. Duplicated wake-ups, and messages of an older version naming a job,
    sent while the jobs run, start nothing twice."""
    queue = f"lorabox-test-{uuid.uuid4().hex[:8]}"
    with (
        fresh_postgres_database() as postgres_url,
        fault_stack(tmp_path, tiny_models_dir, database_url=postgres_url,
                    broker_url=redis_url, queue_name=queue) as f,
    ):  # fmt: skip
        f.env["LORABOX_TEST_STEP_SLEEP_S"] = "2"  # A's first two still run when B submits
        f.start_worker()
        f.start_worker()
        _ready(f, 2)
        alice = f.stack.dataset(e2e_zip)
        a = [f.stack.submit(_body(alice, e2e_payload))["id"] for _ in range(4)]
        f.wait_for_trainer(a[0])
        f.wait_for_trainer(a[1])
        b = f.stack.submit(_body(f.stack.dataset(e2e_zip, "bob"), e2e_payload), user="bob")["id"]
        broker = Broker(f.settings)
        for _ in range(6):
            broker.wake()
        for job_id in (*a, b):
            broker.celery.send_task(RUN_JOB_TASK, args=[job_id], queue=queue)
        broker.close()
        order = _start_order(f, [*a, b])
        assert set(order[:2]) == set(a[:2]) and order[2] == b, order
        first, second = (f.stack.job(j, "admin") for j in a[:2])
        assert max(map(_started_at, (first, second))) < min(
            datetime.fromisoformat(j["finished_at"]) for j in (first, second)
        )  # both ran at once
        _once_each(f, [*a, b])


def test_with_every_message_lost_a_new_job_starts_within_the_reconcile_interval(
    tmp_path: Path, tiny_models_dir: Path, e2e_zip: bytes, e2e_payload: Any
) -> None:
    """The API sends its wake-ups to a queue no worker reads: every one is lost. The idle
    worker's reconciler (every 2 s here) starts the job itself once the job has been left to
    its message for the grace (1 s: worker/runner.py: wake_locally), whenever in the
    interval it was submitted."""
    interval = 2.0
    with fault_stack(tmp_path, tiny_models_dir, queue_name="lorabox-void") as f:
        f.start_worker(LORABOX_QUEUE_NAME="lorabox-read",
                       LORABOX_RECONCILE_INTERVAL_S=str(interval))  # fmt: skip
        _ready(f, 1)
        dataset = f.stack.dataset(e2e_zip)
        grace = interval / 2  # Settings.wake_grace_s
        for pause in (0.0, 0.7):  # two different moments of the reconciler's cycle
            time.sleep(pause)
            submitted = time.time()
            job_id = f.stack.submit(_body(dataset, e2e_payload))["id"]
            job, _ = f.stack.wait(job_id, lambda j: j["started_at"] is not None, 60)
            waited = _started_at(job).timestamp() - submitted
            # The upper bound allows one second for the claim on a busy 2-core box.
            assert grace - 0.1 <= waited <= interval + 1.0, waited
            assert f.finished(job_id)["status"] == "succeeded"
        _once_each(f, [job_id])
