"""The broker hangs instead of refusing (docs/reliability.md): a private redis-server behind a
loopback TCP proxy that stops forwarding while every connection stays open. A submit still
answers 202 within seconds (the job is recorded, queued; a worker claims it when it is free,
no message needed), a running job trains on undisturbed, and after the hang both jobs end
succeeded, each trained once. SQLite holds the jobs; a real `lorabox api` process serves
them. Slow."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from tests.worker.procs import Faults, TcpProxy, pid_alive, private_redis, served_fault_stack

pytestmark = pytest.mark.slow

HANG_S = 8.0
SUBMIT_BY_S = 5.0  # a send to a hanging broker fails within two socket timeouts (2 s each)


def test_a_broker_hang_delays_a_new_job_and_leaves_the_running_one_alone(
    tmp_path: Path, tiny_models_dir: Path, e2e_zip: bytes, e2e_payload: Any
) -> None:
    """While Redis hangs: a submit answers 202 within 5 s and the job is `queued` in the
    database; /healthz answers within 1 s, 503 naming the broker, the database ok; the running
    job's trainer lives on and its progress advances. After the hang the queued job runs (its
    worker claims it when the running one ends: messages only wake workers) and both jobs
    succeed at attempt 1,
    each with one trainer process, one `started` and one `finished` event (a message the hang
    held back and delivered late starts nothing twice)."""
    with private_redis(tmp_path) as redis:
        proxy = TcpProxy(redis.port)
        proxy.restore()
        url = f"redis://127.0.0.1:{proxy.port}/0"
        try:
            with served_fault_stack(tmp_path / "home", tiny_models_dir, broker_url=url) as f:
                _run(f, proxy, e2e_zip, e2e_payload)
        finally:
            proxy.flow()
            proxy.cut()


def _run(f: Faults, proxy: TcpProxy, data: bytes, payload: Any) -> None:
    f.start_worker(LORABOX_TEST_STEP_SLEEP_S="0.5")
    dataset = f.stack.dataset(data)

    def body(epochs: int) -> dict[str, Any]:
        params = payload(epoch=epochs, save_every_n_epochs=0)
        return {"dataset_id": dataset, "base_model": "tiny-sdxl", "params": params}

    running = f.stack.submit(body(24))["id"]
    trainer = f.wait_for_trainer(running)
    step_before = _step(f, running, at_least=1)

    proxy.hang()
    hung_at = time.monotonic()
    queued = f.stack.submit(body(2))["id"]
    submit_s = time.monotonic() - hung_at
    assert submit_s <= SUBMIT_BY_S, submit_s
    assert f.stack.job(queued)["status"] == "queued"
    health_s = _health_names_the_broker(f)
    time.sleep(max(0.0, hung_at + HANG_S - time.monotonic()))
    step_after = _step(f, running, at_least=step_before + 1, timeout_s=5)
    assert pid_alive(trainer), "the hang disturbed the running trainer"
    print(f"submit {submit_s:.2f} s, healthz {health_s:.2f} s, steps {step_before}->{step_after}")
    proxy.flow()

    for job_id in (running, queued):
        done = f.finished(job_id, timeout_s=120)
        assert (done["status"], done["attempt"]) == ("succeeded", 1), f.stack.log_tail()
        assert len(f.starts()[job_id]) == 1
        kinds = [kind for _, _, kind, _ in f.events(job_id) if kind in ("started", "finished")]
        assert kinds == ["started", "finished"], (job_id, kinds)
    assert f.starts()[running] == [trainer]  # the same trainer, start to end


def _step(f: Faults, job_id: str, at_least: int, timeout_s: float = 120) -> int:
    job, _ = f.stack.wait(
        job_id, lambda j: ((j["progress"] or {}).get("step") or 0) >= at_least, timeout_s
    )
    return int(job["progress"]["step"])


def _health_names_the_broker(f: Faults) -> float:
    start = time.monotonic()
    response = f.stack.client.get("/healthz", timeout=30)
    took = time.monotonic() - start
    assert response.status_code == 503, response.text
    health = response.json()
    assert health["broker"] != "ok" and health["database"] == "ok", health
    assert took <= 1.0, took
    return took
