"""Submitting, reading, listing, cancelling and stopping jobs (no worker runs here)."""

from __future__ import annotations

import shutil

import pytest


def test_submit_returns_202_with_location_and_the_contract_shape(service, job_body):
    response = service.submit("alice", job_body)
    assert response.status_code == 202, response.text
    job = response.json()
    assert response.headers["location"] == f"/v1/jobs/{job['id']}"
    assert set(job) == {
        "id", "name", "owner", "status", "queue_position", "attempt", "cancel_requested",
        "base_model", "dataset_id", "params", "plan", "progress", "error", "created_at",
        "started_at", "finished_at", "estimate", "blocked_reason", "estimated_start_at",
        "estimated_finish_at", "priority", "held", "preemptions",
    }  # fmt: skip
    assert (job["owner"], job["status"], job["queue_position"], job["attempt"]) == (
        "alice", "queued", 1, 0,
    )  # fmt: skip
    assert job["error"] is None and job["progress"]["phase"] == "queued"
    assert job["params"]["network_dim"] == 4
    assert job["plan"]["total_steps"] > 0


def test_validate_returns_the_plan_and_queues_nothing(service, job_body):
    response = service.client.post("/v1/jobs/validate", headers=service.as_("alice"), json=job_body)
    assert response.status_code == 200, response.text
    plan = response.json()
    assert set(plan) == {"total_steps", "batches_per_epoch", "epochs", "warmup_steps",
                         "images_x_repeats", "buckets", "warnings", "estimate"}  # fmt: skip
    # 4 images x 3 repeats + 1 image x 1 repeat (the bare "dog" folder got repeats=1)
    assert plan["images_x_repeats"] == 13
    assert sum(b["count"] for b in plan["buckets"]) == 13
    assert all(len(b["resolution"]) == 2 for b in plan["buckets"])
    assert any(w["field"] == "clip_skip" for w in plan["warnings"])  # the trainer's warning
    assert service.client.get("/v1/jobs", headers=service.as_("alice")).json()["items"] == []


def test_path_keys_are_ignored_with_a_warning(service, job_body):
    job_body["params"] |= {"output_dir": "/etc", "train_data_dir": "/root", "logging_dir": "..."}
    plan = service.client.post("/v1/jobs/validate", headers=service.as_("alice"), json=job_body)
    fields = [w["field"] for w in plan.json()["warnings"]]
    assert "output_dir" in fields and "train_data_dir" in fields and "logging_dir" not in fields


def _locs(response) -> list[list]:
    return [p["loc"] for p in response.json()["detail"]]


def test_a_422_lists_every_problem_with_its_field_path(service, job_body):
    job_body["params"] |= {
        "network_dim": "lots",
        "resume": "/some/state",
        "dataset_config": "x.toml",
        "additional_parameters": "--rm -rf",
        "extra_accelerate_launch_args": "--x",
        "wandb_api_key": "sk-secret-value",
        "pretrained_model_name_or_path": "another-model",
        "vae": "no-such-vae",
        "network_weights": "/abs/path.safetensors",
    }
    job_body["base_model"] = "base"
    response = service.submit("alice", job_body)
    assert response.status_code == 422
    locs = _locs(response)
    for key in ("network_dim", "resume", "dataset_config", "additional_parameters",
                "extra_accelerate_launch_args", "wandb_api_key",
                "pretrained_model_name_or_path", "vae", "network_weights"):  # fmt: skip
        assert ["body", "params", key] in locs, key
    assert "sk-secret-value" not in response.text
    assert service.client.get("/v1/jobs", headers=service.as_("alice")).json()["items"] == []


def test_unknown_dataset_model_and_body_fields_are_422(service, job_body):
    body = job_body | {"dataset_id": "nope", "base_model": "missing", "reg_dataset_id": "gone"}
    locs = _locs(service.submit("alice", body))
    assert ["body", "dataset_id"] in locs and ["body", "base_model"] in locs
    assert ["body", "reg_dataset_id"] in locs
    assert service.submit("alice", job_body | {"surprise": 1}).status_code == 422
    assert service.submit("alice", {"params": {}}).status_code == 422


def test_another_users_dataset_is_not_usable(service, job_body):
    response = service.submit("bob", job_body)
    assert response.status_code == 422
    assert ["body", "dataset_id"] in _locs(response)


@pytest.mark.parametrize("name", ["", "...", "base"])
def test_pretrained_model_may_be_empty_dots_or_the_base_model(service, job_body, name):
    job_body["params"]["pretrained_model_name_or_path"] = name
    assert service.submit("alice", job_body).status_code == 202


def test_vae_may_only_name_a_vae_model(service, job_body):
    job_body["params"]["vae"] = "good-vae"
    assert service.submit("alice", job_body).status_code == 202
    job_body["params"]["vae"] = "base"  # an SDXL model, not a VAE
    assert ["body", "params", "vae"] in _locs(service.submit("alice", job_body))


def test_network_weights_must_be_an_artifact_of_the_callers_own_job(service, job_body):
    job = service.submit("alice", job_body).json()
    job_body["params"]["network_weights"] = f"job:{job['id']}/last.safetensors"
    response = service.submit("alice", job_body)  # the job has no such artifact yet
    assert ["body", "params", "network_weights"] in _locs(response)


def test_a_dataset_that_the_trainer_cannot_use_is_a_422_on_dataset_id(service, make_zip, make_png):
    # Images in folders whose names the trainer ignores leave no images to train on.
    dataset = service.dataset("alice", make_zip({"1_a/a.png": make_png()}))
    (service.settings.datasets_dir / dataset / "1_a").rename(
        service.settings.datasets_dir / dataset / "a"
    )
    body = {"dataset_id": dataset, "base_model": "base", "params": {"epoch": 1}}
    response = service.submit("alice", body)
    assert response.status_code == 422
    assert _locs(response) == [["body", "dataset_id"]]


def test_the_same_idempotency_key_returns_the_original_job(service, job_body):
    first = service.submit("alice", job_body, **{"Idempotency-Key": "k1"})
    again = service.submit("alice", job_body, **{"Idempotency-Key": "k1"})
    assert (first.status_code, again.status_code) == (202, 200)
    assert again.json()["id"] == first.json()["id"]
    assert again.headers["location"] == first.headers["location"]
    other = service.submit("alice", job_body | {"name": "changed"}, **{"Idempotency-Key": "k1"})
    assert other.status_code == 409
    # Keys are per user: bob's "k1" is a different key.
    assert len(service.client.get("/v1/jobs", headers=service.as_("alice")).json()["items"]) == 1


def test_the_queued_job_cap_answers_429(service_with, good_dataset_zip, payload):
    service = service_with(max_queued_per_user=2)
    dataset = service.dataset("alice", good_dataset_zip)
    body = {"dataset_id": dataset, "base_model": "base", "params": payload()}
    assert [service.submit("alice", body).status_code for _ in range(3)] == [202, 202, 429]
    jobs = service.client.get("/v1/jobs", headers=service.as_("alice")).json()["items"]
    service.client.post(f"/v1/jobs/{jobs[0]['id']}/cancel", headers=service.as_("alice"))
    assert service.submit("alice", body).status_code == 202


def test_a_job_the_disk_cannot_hold_answers_507(service, job_body):
    free = shutil.disk_usage(service.settings.jobs_dir).free
    service.settings.disk_reserve_bytes = free - 1000  # leave ~1 kB for the job's files
    response = service.submit("alice", job_body)
    assert response.status_code == 507
    assert "estimated" in response.json()["detail"]
    assert service.client.get("/v1/jobs", headers=service.as_("alice")).json()["items"] == []


def test_ownership_404_for_others_and_admins_see_all(service, job_body):
    job_id = service.submit("alice", job_body).json()["id"]
    for method, path in [("get", ""), ("post", "/cancel"), ("post", "/stop"), ("delete", ""),
                         ("get", "/artifacts"), ("get", "/artifacts/train.log")]:  # fmt: skip
        response = getattr(service.client, method)(
            f"/v1/jobs/{job_id}{path}", headers=service.as_("bob")
        )
        assert response.status_code == 404, (method, path)
    assert service.client.get(f"/v1/jobs/{job_id}", headers=service.as_("admin")).status_code == 200
    everyone = service.client.get("/v1/jobs?scope=all", headers=service.as_("admin")).json()
    assert [j["id"] for j in everyone["items"]] == [job_id]
    assert (
        service.client.get("/v1/jobs?scope=all", headers=service.as_("bob")).json()["items"] == []
    )


def test_cancelling_a_queued_job_means_it_never_starts(service, job_body):
    job_id = service.submit("alice", job_body).json()["id"]
    response = service.client.post(f"/v1/jobs/{job_id}/cancel", headers=service.as_("alice"))
    job = response.json()
    assert (job["status"], job["cancel_requested"], job["queue_position"]) == (
        "cancelled",
        True,
        None,
    )
    assert job["finished_at"] is not None
    again = service.client.post(f"/v1/jobs/{job_id}/cancel", headers=service.as_("alice"))
    assert again.status_code == 200  # a double cancel is harmless
    assert (
        service.client.post(f"/v1/jobs/{job_id}/stop", headers=service.as_("alice")).status_code
        == 409
    )


def test_stopping_a_queued_job_cancels_it(service, job_body):
    job_id = service.submit("alice", job_body).json()["id"]
    job = service.client.post(f"/v1/jobs/{job_id}/stop", headers=service.as_("alice")).json()
    assert job["status"] == "cancelled"


def test_queue_positions_follow_submission_order(service, job_body):
    ids = [service.submit("alice", job_body).json()["id"] for _ in range(3)]
    positions = [
        service.client.get(f"/v1/jobs/{i}", headers=service.as_("alice")).json()["queue_position"]
        for i in ids
    ]
    assert positions == [1, 2, 3]
    service.client.post(f"/v1/jobs/{ids[0]}/cancel", headers=service.as_("alice"))
    listed = service.client.get("/v1/jobs?status=queued", headers=service.as_("alice")).json()
    assert [(j["id"], j["queue_position"]) for j in listed["items"]] == [(ids[2], 2), (ids[1], 1)]


def test_listing_is_paginated_newest_first(service, job_body):
    ids = [service.submit("alice", job_body).json()["id"] for _ in range(5)]
    seen, cursor = [], None
    while True:
        url = "/v1/jobs?limit=2" + (f"&cursor={cursor}" if cursor else "")
        page = service.client.get(url, headers=service.as_("alice")).json()
        seen += [j["id"] for j in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ids[::-1]
    assert (
        service.client.get("/v1/jobs?cursor=garbage", headers=service.as_("alice")).status_code
        == 422
    )
    assert (
        service.client.get("/v1/jobs?status=bogus", headers=service.as_("alice")).status_code == 422
    )


def test_deleting_is_only_for_finished_jobs(service, job_body):
    job_id = service.submit("alice", job_body).json()["id"]
    assert (
        service.client.delete(f"/v1/jobs/{job_id}", headers=service.as_("alice")).status_code == 409
    )
    service.client.post(f"/v1/jobs/{job_id}/cancel", headers=service.as_("alice"))
    assert (
        service.client.delete(f"/v1/jobs/{job_id}", headers=service.as_("alice")).status_code == 204
    )
    assert service.client.get(f"/v1/jobs/{job_id}", headers=service.as_("alice")).status_code == 404


def test_a_dataset_in_use_by_a_queued_job_cannot_be_deleted(service, job_body):
    service.submit("alice", job_body)
    response = service.client.delete(
        f"/v1/datasets/{job_body['dataset_id']}", headers=service.as_("alice")
    )
    assert response.status_code == 409


def test_images_that_cannot_get_a_bucket_are_a_422_naming_the_image(service, make_zip, make_png):
    # Without bucketing every image must be exactly the resolution: a 422, never a 500.
    dataset = service.dataset("alice", make_zip({"1_a/a.png": make_png()}))
    body = {
        "dataset_id": dataset,
        "base_model": "base",
        "params": {"epoch": 1, "enable_bucket": False, "max_resolution": "1024,1024"},
    }
    response = service.submit("alice", body)
    assert response.status_code == 422, response.text
    assert _locs(response) == [["body", "dataset_id"]]
    assert "1_a/a.png" in response.text and "training resolution" in response.text
