"""End to end on the production stack: Postgres + Redis, API and worker as separate processes."""

from __future__ import annotations

import hashlib
import time

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.redis]


def test_upload_submit_train_and_download_on_postgres_and_redis(
    production_stack, e2e_zip, e2e_payload
):
    stack = production_stack
    assert stack.client.get("/healthz").json() == {"status": "ok", "database": "ok", "broker": "ok"}
    dataset = stack.dataset(e2e_zip)
    job = stack.submit(
        {"dataset_id": dataset, "base_model": "tiny-sdxl", "params": e2e_payload(epoch=2)}
    )
    done, seen = stack.wait(job["id"], lambda j: j["status"] in ("succeeded", "failed"))
    assert done["status"] == "succeeded", (done["error"], stack.log_tail())
    assert "running" in seen and done["progress"]["step"] == 2
    items = stack.client.get(f"/v1/jobs/{job['id']}/artifacts", headers=stack.as_()).json()
    lora = next(a for a in items["items"] if a["kind"] == "lora")
    data = stack.client.get(f"/v1/jobs/{job['id']}/artifacts/{lora['name']}", headers=stack.as_())
    assert hashlib.sha256(data.content).hexdigest() == lora["sha256"]
    assert stack.client.get(f"/v1/jobs/{job['id']}", headers=stack.as_("bob")).status_code == 404


def test_a_running_job_is_cancelled_and_a_duplicate_message_is_ignored(
    production_stack, e2e_zip, e2e_payload
):
    from core.jobs.broker import Broker

    stack = production_stack
    dataset = stack.dataset(e2e_zip)
    job = stack.submit(
        {"dataset_id": dataset, "base_model": "tiny-sdxl", "params": e2e_payload(epoch=500)}
    )
    stack.wait(job["id"], lambda j: (j["progress"].get("step") or 0) >= 1)
    broker = Broker(stack.settings)  # as if Redis redelivered the message mid-run
    broker.wake()
    broker.close()
    time.sleep(1)
    stack.client.post(f"/v1/jobs/{job['id']}/cancel", headers=stack.as_())
    done, _ = stack.wait(job["id"], lambda j: j["status"] != "running", 120)
    assert (done["status"], done["attempt"]) == ("cancelled", 1)
