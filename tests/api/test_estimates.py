"""What a job needs and when it ends, known at validate and submit (core/jobs/estimate.py):
the estimate on each counted worker, the does_not_fit refusal with changes that each fit,
the warning when no worker runs, and the forecast on the job."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from core.db import Database
from core.db.tables import utcnow
from core.settings import Settings
from core.workers import DeviceReport
from core.workers.registry import IDLE, report_worker
from tests.api.conftest import write_fake_safetensors
from tests.conftest import SEED, Service

GIB = 2**30
PARTS = {"weights", "lora", "gradients", "optimizer", "activations", "temporaries",
         "workspace", "allocator", "cuda_context"}  # fmt: skip


@pytest.fixture
def tiny_service(
    settings_factory: Callable[..., Settings],
    make_service: Callable[..., Iterator[Service]],
    tiny_models_dir: Path,
) -> Iterator[Service]:
    yield from make_service(settings_factory(models_dir=tiny_models_dir))


def add_worker(settings: Settings, name: str, memory_bytes: int, peak: float = 1e12) -> None:
    report = DeviceReport(
        key=f"test-host:{name}", name=name, host="test-host", device="cpu", gpu_name=None,
        gpu_uuid=None, total_memory_bytes=memory_bytes, free_memory_bytes=memory_bytes,
        compute_capability=None, torch_version="2.13.0", cuda_version=None, driver_version=None,
        peak_flops=peak, peak_source="probe",
    )  # fmt: skip
    db = Database(settings.database_url)
    with db.writing() as session:
        report_worker(session, settings, report, state=IDLE, current_job_id=None,
                      process=f"test:{name}", started_at=utcnow())  # fmt: skip
    db.dispose()


def body(service: Service, data: bytes, payload: Callable[..., dict[str, Any]], **params: Any):
    dataset = service.dataset("alice", data)
    return {"dataset_id": dataset, "base_model": "tiny-sdxl", "params": payload(**params)}


def validate(service: Service, job: dict[str, Any]) -> Any:
    return service.client.post("/v1/jobs/validate", headers=service.as_("alice"), json=job)


def test_without_a_worker_the_estimate_is_shown_and_the_fit_is_a_warning(
    tiny_service: Service, good_dataset_zip: bytes, payload: Callable[..., dict[str, Any]]
):
    response = validate(tiny_service, body(tiny_service, good_dataset_zip, payload))
    assert response.status_code == 200, response.text
    estimate = response.json()["estimate"]
    assert set(estimate["parts"]) == PARTS
    assert estimate["peak_vram_bytes"] == sum(estimate["parts"].values())
    assert estimate["step_flops"] > 0 and estimate["per_worker"] == []
    assert estimate["s_per_step"] is None and estimate["total_s"] is None
    assert any("no worker is running" in w["message"] for w in response.json()["warnings"])


def test_a_miniature_job_fits_a_cpu_worker_and_gets_a_forecast(
    tiny_service: Service, good_dataset_zip: bytes, payload: Callable[..., dict[str, Any]]
):
    add_worker(tiny_service.settings, "cpu-box", 24 * GIB)
    job_body = body(tiny_service, good_dataset_zip, payload)
    estimate = validate(tiny_service, job_body).json()["estimate"]
    (fit,) = estimate["per_worker"]
    assert fit["worker"] == "cpu-box" and fit["fits"]
    assert fit["headroom_bytes"] == 24 * GIB - estimate["peak_vram_bytes"]
    assert fit["s_per_step"] > 0 and fit["total_s"] >= fit["s_per_step"]
    assert estimate["s_per_step"] == fit["s_per_step"]

    job = tiny_service.submit("alice", job_body).json()
    assert job["estimate"] == estimate and job["blocked_reason"] is None
    start = datetime.fromisoformat(job["estimated_start_at"])
    finish = datetime.fromisoformat(job["estimated_finish_at"])
    assert (finish - start).total_seconds() == pytest.approx(fit["total_s"], abs=0.01)


def test_a_job_too_big_for_every_worker_is_refused_with_changes_that_each_fit(
    tiny_service: Service, good_dataset_zip: bytes, payload: Callable[..., dict[str, Any]]
):
    big = {"gradient_checkpointing": False, "train_batch_size": 4, "max_resolution": "128,128",
           "max_bucket_reso": 128}  # fmt: skip
    job_body = body(tiny_service, good_dataset_zip, payload, **big)
    saver = {**job_body, "params": {**job_body["params"], "gradient_checkpointing": True}}
    need = validate(tiny_service, job_body).json()["estimate"]["peak_vram_bytes"]
    fits = validate(tiny_service, saver).json()["estimate"]["peak_vram_bytes"]
    assert fits < need  # checkpointing saves memory on the miniature too
    headroom = tiny_service.settings.vram_headroom_bytes
    add_worker(tiny_service.settings, "small-card", headroom + fits)

    response = tiny_service.submit("alice", job_body)
    assert response.status_code == 422, response.text
    (problem,) = response.json()["detail"]
    assert problem["type"] == "does_not_fit" and problem["loc"] == ["body", "params"]
    assert "gradient_checkpointing: true" in problem["msg"]
    suggestions = problem["ctx"]["suggestions"]
    assert {"gradient_checkpointing": True} in [s["changes"] for s in suggestions]
    for suggestion in suggestions:  # each checked again through the API: it fits
        changed = {**job_body, "params": {**job_body["params"], **suggestion["changes"]}}
        again = validate(tiny_service, changed)
        assert again.status_code == 200, (suggestion, again.text)
        assert again.json()["estimate"]["per_worker"][0]["fits"], suggestion
    assert (
        tiny_service.client.get("/v1/jobs", headers=tiny_service.as_("alice")).json()["items"] == []
    )


@pytest.fixture
def full_size_service(
    settings_factory: Callable[..., Settings],
    make_service: Callable[..., Iterator[Service]],
    tmp_path: Path,
) -> Iterator[Service]:
    """A catalog whose one base is full-size SDXL (a header: the shipped configs size it)."""
    write_fake_safetensors(tmp_path / "models" / "sdxl.safetensors", ["model.diffusion_model.x"])
    yield from make_service(settings_factory(models_dir=tmp_path / "models"))


def test_native_fine_tuning_of_full_sdxl_is_refused_on_a_16_gb_worker(
    full_size_service: Service, good_dataset_zip: bytes
):
    service = full_size_service
    add_worker(service.settings, "card-16gb", 16 * GIB)
    dataset = service.dataset("alice", good_dataset_zip)
    job = {"dataset_id": dataset, "base_model": "sdxl", "params": SEED}
    answer = validate(service, job)
    assert answer.status_code == 200, answer.text
    seed = answer.json()["estimate"]
    assert seed["per_worker"][0]["fits"], seed  # the seed payload fits the card
    heavy = {**job, "params": {**SEED, "LoRA_type": "LyCORIS/Native Fine-Tuning"}}
    response = service.submit("alice", heavy)
    assert response.status_code == 422, response.text
    (problem,) = response.json()["detail"]
    assert problem["type"] == "does_not_fit"
    # The reason: the parts that make it big (a trained copy of every weight).
    assert "lora" in problem["msg"] and "gradients" in problem["msg"], problem["msg"]
    changes = [s["changes"] for s in problem["ctx"]["suggestions"]]
    assert {"LoRA_type": "LyCORIS/LoCon"} in changes, problem["msg"]  # a lighter type fits
