"""Redis misbehaving, for real, on a private redis-server (docs/reliability.md): a visibility
timeout shorter than a job (Redis redelivers a message that is still running), and a broker
restart that loses every message while jobs are queued and running. SQLite holds the jobs.
Slow: real workers train the miniature SDXL."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from tests.worker.procs import fault_stack, private_redis, wait_until

pytestmark = pytest.mark.slow


def test_a_message_redelivered_after_the_visibility_timeout_never_starts_a_second_run(
    tmp_path: Path, tiny_models_dir: Path, e2e_zip: bytes, e2e_payload: Any
) -> None:
    with (
        private_redis(tmp_path) as redis,
        fault_stack(tmp_path / "home", tiny_models_dir, broker_url=redis.url,
                    broker_visibility_timeout_s=2) as f,
    ):  # fmt: skip
        f.env["LORABOX_BROKER_VISIBILITY_TIMEOUT_S"] = "2"
        busy = f.start_worker(LORABOX_TEST_STEP_SLEEP_S="1")
        dataset = f.stack.dataset(e2e_zip)
        body = {"dataset_id": dataset, "base_model": "tiny-sdxl",
                "params": e2e_payload(epoch=10, save_every_n_epochs=0)}  # fmt: skip
        job_id = f.stack.submit(body)["id"]
        f.wait_for_trainer(job_id)
        # Kombu restores unacked messages older than the visibility timeout when a consumer
        # starts (then only every 10 s): the message must be that old first.
        time.sleep(2.5)
        # It restores the message and receives it again. Spawning (no fork server to warm up
        # first), it consumes within seconds, while the job still runs.
        idle = f.start_worker(LORABOX_TRAINER_START_METHOD="spawn")
        idle_log = f.stack.logs[-1]
        wait_until(
            lambda: "wake-up: nothing eligible" in idle_log.read_text(errors="replace"),
            90,
            "the redelivered message to reach the idle worker",
        )
        done = f.finished(job_id)
        assert (done["status"], done["attempt"]) == ("succeeded", 1), f.stack.log_tail()
        assert len(f.starts()[job_id]) == 1
        started = [e for e in f.events(job_id) if e[2] == "started"]
        assert len(started) == 1
        assert busy.poll() is None and idle.poll() is None


def test_a_broker_restart_that_loses_every_message_loses_no_job(
    tmp_path: Path, tiny_models_dir: Path, e2e_zip: bytes, e2e_payload: Any
) -> None:
    with (
        private_redis(tmp_path) as redis,
        fault_stack(tmp_path / "home", tiny_models_dir, broker_url=redis.url) as f,
    ):
        f.start_worker(LORABOX_TEST_STEP_SLEEP_S="1")
        dataset = f.stack.dataset(e2e_zip)
        body = {"dataset_id": dataset, "base_model": "tiny-sdxl",
                "params": e2e_payload(epoch=3, save_every_n_epochs=0)}  # fmt: skip
        jobs = [f.stack.submit(body)["id"] for _ in range(3)]
        f.stack.wait(jobs[0], lambda j: ((j["progress"] or {}).get("step") or 0) >= 1, 180)
        redis.kill()  # no persistence: the two queued messages and the unacked one are gone
        redis.start()
        for job_id in jobs:
            done = f.finished(job_id, timeout_s=300)
            assert (done["status"], done["attempt"]) == ("succeeded", 1), f.stack.log_tail()
            assert len(f.starts()[job_id]) == 1
        # No message was needed: the worker claims the next job when one ends, and an idle
        # worker's reconciler starts it without the broker (worker/runner.py: wake_locally).
