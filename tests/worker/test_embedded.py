"""End to end on embedded defaults: SQLite, the server-less broker, a real worker process
training the miniature SDXL for real."""

from __future__ import annotations

import hashlib
import time

import pytest
import sqlalchemy as sa

pytestmark = pytest.mark.slow


def _events(stack, job_id: str) -> list[str]:
    engine = sa.create_engine(stack.settings.database_url)
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text("SELECT kind FROM job_events WHERE job_id = :j ORDER BY id"), {"j": job_id}
        )
        kinds = [r[0] for r in rows]
    engine.dispose()
    return kinds


@pytest.fixture(scope="session")
def trained(embedded_stack, e2e_zip, e2e_payload):
    """One finished two-epoch job, shared by every test that only reads it."""
    dataset = embedded_stack.dataset(e2e_zip)
    job = embedded_stack.submit(
        {
            "dataset_id": dataset,
            "base_model": "tiny-sdxl",
            "name": "shared",
            "params": e2e_payload(
                epoch=2,
                save_every_n_epochs=1,
                sample_every_n_epochs=1,
                sample_prompts="a red circle --n blurry --w 64 --h 64 --s 2 --d 7 --l 5",
                sample_sampler="euler",
                scale_weight_norms=1.0,
            ),
        }  # fmt: skip
    )
    assert job["status"] == "queued"
    done, seen = embedded_stack.wait(
        job["id"], lambda j: j["status"] in ("succeeded", "failed", "cancelled")
    )
    assert done["status"] == "succeeded", (done["error"], embedded_stack.log_tail())
    return done, seen


def test_a_job_goes_queued_running_succeeded(embedded_stack, trained):
    job, seen = trained
    assert seen[0] in ("queued", "running") and seen[-1] == "succeeded"
    assert "running" in seen
    kinds = _events(embedded_stack, job["id"])
    assert kinds[0] == "queued" and kinds[1] == "started" and kinds[-1] == "finished"
    assert {"phase", "training_started", "artifact", "epoch"} <= set(kinds)
    assert job["attempt"] == 1 and job["started_at"] and job["finished_at"]


def test_progress_reaches_the_last_step(trained):
    job, _ = trained
    progress = job["progress"]
    assert progress["step"] == progress["total_steps"] == job["plan"]["total_steps"] == 2
    assert progress["total_epochs"] == 2 and isinstance(progress["loss"], float)
    assert progress["lr"] and progress["elapsed_s"] > 0 and progress["peak_gpu_mem_bytes"] is None
    assert set(progress["max_norm"]) == {
        "max_norm/keys_scaled", "max_norm/average_key_norm", "max_norm/max_key_norm"
    }  # fmt: skip


def test_artifacts_are_registered_with_their_hashes(embedded_stack, trained):
    job, _ = trained
    items = embedded_stack.client.get(
        f"/v1/jobs/{job['id']}/artifacts", headers=embedded_stack.as_()
    ).json()["items"]
    by_name = {a["name"]: a for a in items}
    assert by_name["shared.safetensors"]["kind"] == "lora"
    assert by_name["shared-000001.safetensors"]["kind"] == "checkpoint"
    assert by_name["shared-000001.safetensors"]["epoch"] == 1
    assert by_name["train.log"]["kind"] == "log"
    lora = embedded_stack.client.get(
        f"/v1/jobs/{job['id']}/artifacts/shared.safetensors", headers=embedded_stack.as_()
    )
    assert lora.status_code == 200
    assert hashlib.sha256(lora.content).hexdigest() == by_name["shared.safetensors"]["sha256"]
    assert len(lora.content) == by_name["shared.safetensors"]["size_bytes"]


def test_sample_images_come_back_as_pngs_with_their_settings_and_on_the_stream(
    embedded_stack, trained
):
    from io import BytesIO

    from PIL import Image

    job, _ = trained
    headers = embedded_stack.as_()
    items = embedded_stack.client.get(f"/v1/jobs/{job['id']}/artifacts", headers=headers)
    samples = [a for a in items.json()["items"] if a["kind"] == "sample"]
    assert [a["epoch"] for a in samples] == [1, 2]  # one prompt, after each epoch
    assert all(a["name"].startswith("sample/shared_e00000") for a in samples)
    png = embedded_stack.client.get(
        f"/v1/jobs/{job['id']}/artifacts/{samples[-1]['name']}", headers=headers
    )
    assert hashlib.sha256(png.content).hexdigest() == samples[-1]["sha256"]
    image = Image.open(BytesIO(png.content))
    assert image.format == "PNG" and image.size == (64, 64)
    text = image.text  # type: ignore[attr-defined]
    assert (text["prompt"], text["negative_prompt"]) == ("a red circle", "blurry")
    assert text["seed"] == "7"
    assert (text["steps"], text["cfg_scale"], text["sampler"]) == ("2", "5.0", "euler")
    assert text["parameters"].startswith("a red circle\nNegative prompt: blurry\nSteps: 2")
    stream = embedded_stack.client.get(f"/v1/jobs/{job['id']}/events?after=0", headers=headers)
    shown = [line for line in stream.text.splitlines() if line == "event: sample"]
    assert len(shown) == 2


def test_artifact_downloads_honour_range_and_only_registered_files(embedded_stack, trained):
    job, _ = trained
    url = f"/v1/jobs/{job['id']}/artifacts/shared.safetensors"
    part = embedded_stack.client.get(url, headers=embedded_stack.as_() | {"Range": "bytes=0-7"})
    assert part.status_code == 206 and len(part.content) == 8
    for name in ("../../lorabox.db", "nope.safetensors", "%2e%2e/%2e%2e/lorabox.db"):
        response = embedded_stack.client.get(
            f"/v1/jobs/{job['id']}/artifacts/{name}", headers=embedded_stack.as_()
        )
        assert response.status_code == 404, name
    assert embedded_stack.client.get(url, headers=embedded_stack.as_("bob")).status_code == 404


def test_the_lora_loads_in_diffusers(embedded_stack, trained, tiny_models_dir, tmp_path):
    from diffusers import StableDiffusionXLPipeline

    job, _ = trained
    lora = embedded_stack.client.get(
        f"/v1/jobs/{job['id']}/artifacts/shared.safetensors", headers=embedded_stack.as_()
    )
    (tmp_path / "lora.safetensors").write_bytes(lora.content)
    pipe = StableDiffusionXLPipeline.from_single_file(
        str(tiny_models_dir / "tiny-sdxl.safetensors"),
        config=str(tiny_models_dir / "tiny-sdxl.config"),
        local_files_only=True,
    )
    pipe.load_lora_weights(str(tmp_path), weight_name="lora.safetensors", adapter_name="job")
    assert "job" in pipe.get_list_adapters()["unet"]


def test_network_weights_may_name_the_callers_finished_lora(embedded_stack, trained, e2e_payload):
    job, _ = trained
    weights = f"job:{job['id']}/shared.safetensors"
    body = {"dataset_id": job["dataset_id"], "base_model": "tiny-sdxl",
            "params": e2e_payload(network_weights=weights)}  # fmt: skip
    ok = embedded_stack.client.post("/v1/jobs/validate", headers=embedded_stack.as_(), json=body)
    assert ok.status_code == 200, ok.text
    other = embedded_stack.client.post(
        "/v1/jobs/validate", headers=embedded_stack.as_("bob"), json=body
    )
    assert other.status_code == 422


def test_a_redelivered_message_for_a_finished_job_does_nothing(embedded_stack, trained):
    from core.jobs.broker import Broker

    job, _ = trained
    before = _events(embedded_stack, job["id"])
    broker = Broker(embedded_stack.settings)
    broker.wake()
    broker.close()
    time.sleep(3)  # the embedded broker polls twice a second
    assert embedded_stack.job(job["id"])["attempt"] == 1
    assert _events(embedded_stack, job["id"]) == before


def _long_job(stack, dataset_zip, e2e_payload, **extra):
    dataset = stack.dataset(dataset_zip)
    return stack.submit(
        {
            "dataset_id": dataset,
            "base_model": "tiny-sdxl",
            "params": e2e_payload(epoch=500, save_every_n_epochs=0, **extra),
        }  # fmt: skip
    )


def _training(job) -> bool:
    return job["status"] == "running" and (job["progress"].get("step") or 0) >= 1


def test_cancel_stops_a_running_job_within_a_step_and_a_queued_one_never_starts(
    embedded_stack, trained, e2e_zip, e2e_payload
):
    running = _long_job(embedded_stack, e2e_zip, e2e_payload)
    queued = _long_job(embedded_stack, e2e_zip, e2e_payload)
    job, _ = embedded_stack.wait(running["id"], _training)
    headers = embedded_stack.as_()
    cancelled = embedded_stack.client.post(f"/v1/jobs/{queued['id']}/cancel", headers=headers)
    assert cancelled.json()["status"] == "cancelled"
    step_at_cancel = embedded_stack.job(running["id"])["progress"]["step"]
    response = embedded_stack.client.post(f"/v1/jobs/{running['id']}/cancel", headers=headers)
    assert response.json()["cancel_requested"] is True
    done, _ = embedded_stack.wait(running["id"], lambda j: j["status"] != "running", 120)
    assert done["status"] == "cancelled"
    assert done["progress"]["step"] <= step_at_cancel + 2  # within a step (plus one in flight)
    never = embedded_stack.job(queued["id"])
    assert (never["status"], never["attempt"], never["started_at"]) == ("cancelled", 0, None)
    assert "started" not in _events(embedded_stack, queued["id"])


def test_stop_finishes_a_running_job_early_and_keeps_the_lora(
    embedded_stack, trained, e2e_zip, e2e_payload
):
    job = _long_job(embedded_stack, e2e_zip, e2e_payload)
    embedded_stack.wait(job["id"], _training)
    stopped = embedded_stack.client.post(f"/v1/jobs/{job['id']}/stop", headers=embedded_stack.as_())
    assert stopped.status_code == 200
    done, _ = embedded_stack.wait(job["id"], lambda j: j["status"] != "running", 120)
    assert done["status"] == "succeeded", done["error"]
    assert done["progress"]["step"] < done["plan"]["total_steps"]
    listed = embedded_stack.client.get(
        f"/v1/jobs/{job['id']}/artifacts", headers=embedded_stack.as_()
    )
    names = [a["name"] for a in listed.json()["items"]]
    assert f"{job['id'][:8]}.safetensors" in names  # an unnamed job's files: its short id


def test_a_paused_queue_holds_jobs_and_trainer_errors_fail_the_job_with_their_code(
    embedded_stack, trained, e2e_zip, e2e_payload
):
    # A model that exists at submit time and is gone when the job starts.
    import json
    import struct

    header = json.dumps({"model.diffusion_model.x": {"dtype": "F16", "shape": [1],
                         "data_offsets": [0, 2]}}).encode()  # fmt: skip
    broken = embedded_stack.settings.models_dir / "broken.safetensors"
    broken.write_bytes(struct.pack("<Q", len(header)) + header + b"\0\0")
    admin = embedded_stack.as_("admin")
    try:
        assert embedded_stack.client.post("/v1/queue/pause", headers=admin).status_code == 200
        dataset = embedded_stack.dataset(e2e_zip)
        job = embedded_stack.submit(
            {"dataset_id": dataset, "base_model": "broken", "params": e2e_payload()}
        )
        time.sleep(3)
        held = embedded_stack.job(job["id"])
        assert (held["status"], held["attempt"]) == ("queued", 0)
        broken.unlink()
        embedded_stack.client.post("/v1/queue/resume", headers=admin)
        done, _ = embedded_stack.wait(job["id"], lambda j: j["status"] in ("succeeded", "failed"))
    finally:
        embedded_stack.client.post("/v1/queue/resume", headers=admin)
        broken.unlink(missing_ok=True)
    assert done["status"] == "failed"
    assert done["error"]["code"] == "base_model_missing", done["error"]
    assert "does not exist" in done["error"]["message"]
