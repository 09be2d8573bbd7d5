"""GET /v1/workers: counted workers only; every user sees name, GPU, state and job, admins
see the device and the time model too."""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa

from core.db import Database
from core.db.tables import Worker, utcnow
from core.workers import DeviceReport
from core.workers.registry import report_worker

USER_FIELDS = {"name", "gpu_name", "state", "current_job_id"}


def _report(name: str, **values: object) -> DeviceReport:
    fields: dict[str, object] = dict(
        key=f"box:{name}", name=name, host="box", device="cuda",
        gpu_name="NVIDIA GeForce RTX 4070 Ti SUPER", gpu_uuid=f"GPU-{name}",
        total_memory_bytes=16 << 30, free_memory_bytes=15 << 30, compute_capability="8.9",
        torch_version="2.13.0", cuda_version="12.8", driver_version="575.51",
        peak_flops=88.2e12, peak_source="table",
    )  # fmt: skip
    return DeviceReport(**(fields | values))  # type: ignore[arg-type]


def _add_workers(settings) -> None:
    db = Database(settings.database_url, pool_size=1)
    now = utcnow()
    with db.writing() as session:
        report_worker(
            session,
            settings,
            _report("box:gpu0"),
            state="busy",
            current_job_id="j" * 32,
            process="box:1:gpu0",
            started_at=now,
        )
        cpu = _report(
            "box:cpu",
            device="cpu",
            gpu_name=None,
            gpu_uuid=None,
            compute_capability=None,
            cuda_version=None,
            driver_version=None,
            peak_flops=5e10,
            peak_source="probe",
        )
        report_worker(
            session,
            settings,
            cpu,
            state="idle",
            current_job_id=None,
            process="box:2:gpuany",
            started_at=now,
        )
        for gone, state in (("gone", "idle"), ("stopped", "offline")):
            report_worker(session, settings, _report(gone), state=state, current_job_id=None,
                          process="x", started_at=now)  # fmt: skip
        long_ago = now - timedelta(seconds=settings.worker_expiry_s + 1)
        session.execute(sa.update(Worker).where(Worker.name == "gone").values(seen_at=long_ago))
    db.dispose()


def test_users_see_name_gpu_state_and_job_and_admins_see_every_field(service):
    _add_workers(service.settings)

    users = service.client.get("/v1/workers", headers=service.as_("alice"))
    assert users.status_code == 200, users.text
    items = users.json()["items"]
    assert [w["name"] for w in items] == ["box:cpu", "box:gpu0"]  # not the gone or stopped
    assert all(set(w) == USER_FIELDS for w in items)
    assert items[1] == {"name": "box:gpu0", "gpu_name": "NVIDIA GeForce RTX 4070 Ti SUPER",
                        "state": "busy", "current_job_id": "j" * 32}  # fmt: skip

    admins = service.client.get("/v1/workers", headers=service.as_("admin")).json()["items"]
    cpu, gpu = admins
    assert set(gpu) > USER_FIELDS | {
        "total_memory_bytes",
        "free_memory_bytes",
        "peak_flops",
        "efficiency",
        "allowances_s",
        "torch_version",
    }
    assert (gpu["total_memory_bytes"], gpu["free_memory_bytes"]) == (16 << 30, 15 << 30)
    assert (gpu["peak_flops"], gpu["peak_source"], gpu["compute_capability"]) == (
        88.2e12, "table", "8.9")  # fmt: skip
    assert (cpu["device"], cpu["gpu_name"], cpu["peak_source"]) == ("cpu", None, "probe")
    assert gpu["efficiency"] == service.settings.worker_default_efficiency
    assert gpu["allowances_s"] == service.settings.worker_allowances()

    assert service.client.get("/v1/workers").status_code == 401
