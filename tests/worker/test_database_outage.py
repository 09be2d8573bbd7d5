"""The database goes away while a job trains (docs/reliability.md): a private Postgres cluster
behind a loopback TCP proxy that the test cuts. Training goes on within the lease; the worker
that cannot renew fences itself (stops its trainer, keeps its files); the API answers 503 in
JSON, never 500; once the database is back the reconciler re-queues the job. Slow."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from tests.worker.procs import TcpProxy, fault_stack, pid_alive, private_postgres, wait_until

pytestmark = pytest.mark.slow

LEASE_S = 8.0  # the worker fences itself after 0.75 of it without a renewal


def test_a_worker_cut_off_from_the_database_trains_within_its_lease_then_fences_itself(
    tmp_path: Path, tiny_models_dir: Path, e2e_zip: bytes, e2e_payload: Any
) -> None:
    with private_postgres() as pg_port:
        proxy = TcpProxy(pg_port)
        proxy.restore()
        url = f"postgresql+psycopg://postgres@127.0.0.1:{proxy.port}/postgres"
        with fault_stack(tmp_path / "home", tiny_models_dir, database_url=url,
                         lease_timeout_s=LEASE_S) as f:  # fmt: skip
            f.env["LORABOX_LEASE_TIMEOUT_S"] = str(LEASE_S)
            worker = f.start_worker(LORABOX_TEST_STEP_SLEEP_S="0.5")
            dataset = f.stack.dataset(e2e_zip)
            body = {"dataset_id": dataset, "base_model": "tiny-sdxl",
                    "params": e2e_payload(epoch=200, save_every_n_epochs=0)}  # fmt: skip
            job_id = f.stack.submit(body)["id"]
            trainer = f.wait_for_trainer(job_id)
            f.stack.wait(job_id, lambda j: ((j["progress"] or {}).get("step") or 0) >= 2, 180)
            log = f.settings.jobs_dir / job_id / "train.log"

            proxy.cut()
            cut_at = time.monotonic()
            down = f.stack.client.get(f"/v1/jobs/{job_id}", headers=f.stack.as_())
            assert down.status_code == 503 and "database" in down.json()["detail"]
            assert f.stack.client.get("/healthz").status_code == 503
            time.sleep(LEASE_S * 0.4)
            assert pid_alive(trainer)  # within the lease: training goes on
            wait_until(lambda: not pid_alive(trainer), LEASE_S + 30, "the worker to fence itself")
            assert time.monotonic() - cut_at >= LEASE_S * 0.75 - 1
            assert worker.poll() is None  # the worker survives; its trainer's files stay
            assert log.exists()

            proxy.restore()
            job, _ = f.stack.wait(job_id, lambda j: j["attempt"] == 2, 120)
            events = f.events(job_id)
            lost = [d for _, a, kind, d in events if kind == "worker_lost"]
            assert [d["reason"] for d in lost] == ["lease_expired"]
            assert job["status"] in ("queued", "running")
        proxy.cut()
