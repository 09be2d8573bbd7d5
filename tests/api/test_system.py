"""Auth, body limits, models, queue control, health and the OpenAPI document."""

from __future__ import annotations

import pytest


def test_requests_without_a_valid_token_are_401(service):
    assert service.client.get("/v1/jobs").status_code == 401
    response = service.client.get("/v1/jobs", headers={"Authorization": "Bearer nope"})
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.json() == {"detail": "invalid or revoked token"}


def test_a_json_body_over_the_limit_is_413_before_parsing(service_with):
    service = service_with(max_json_bytes=1000)
    body = b'{"dataset_id": "' + b"x" * 2000 + b'"}'
    headers = service.as_("alice") | {"content-type": "application/json"}
    response = service.client.post("/v1/jobs", content=body, headers=headers)
    assert response.status_code == 413
    assert "larger than 1000" in response.json()["detail"]


def test_a_chunked_json_body_over_the_limit_is_413(service_with):
    service = service_with(max_json_bytes=1000)
    headers = service.as_("alice") | {"content-type": "application/json"}
    chunks = (b"[" + b"1," * 200 + b"1]" for _ in range(5))
    response = service.client.post("/v1/jobs", content=chunks, headers=headers)
    assert response.status_code == 413


@pytest.mark.parametrize("depth", [65, 100_000])
def test_json_nested_deeper_than_64_is_422(service, depth):
    body = (
        '{"dataset_id": "x", "base_model": "b", "params": {"a": ' + "[" * depth + "]" * depth + "}}"
    )
    headers = service.as_("alice") | {"content-type": "application/json"}
    response = service.client.post("/v1/jobs", content=body, headers=headers)
    assert response.status_code == 422
    assert response.json()["detail"][0]["type"] == "json_depth"


def test_brackets_inside_strings_do_not_count_as_nesting(service, job_body):
    job_body["name"] = "[" * 200
    assert service.submit("alice", job_body).status_code == 202


def test_malformed_json_is_422_not_500(service):
    headers = service.as_("alice") | {"content-type": "application/json"}
    for body in (b"{", b"\xff\xfe", b"[]", b'{"params": 1}', b"null"):
        response = service.client.post("/v1/jobs", content=body, headers=headers)
        assert response.status_code == 422, body


def test_models_lists_sdxl_and_vae_models_and_skips_pickles_and_loras(service):
    response = service.client.get("/v1/models", headers=service.as_("alice"))
    items = {m["name"]: m for m in response.json()["items"]}
    assert set(items) == {"base", "diffusers-base", "good-vae"}
    assert (items["base"]["kind"], items["base"]["format"]) == ("sdxl", "single_file")
    assert (items["diffusers-base"]["kind"], items["diffusers-base"]["format"]) == (
        "sdxl",
        "diffusers",
    )
    assert (items["good-vae"]["kind"], items["good-vae"]["format"]) == ("vae", "single_file")
    assert all(len(m["sha256"]) == 64 and m["size_bytes"] > 0 for m in items.values())


def test_only_admins_pause_and_resume_the_queue(service):
    assert service.client.post("/v1/queue/pause", headers=service.as_("alice")).status_code == 403
    assert service.client.post("/v1/queue/pause", headers=service.as_("admin")).json() == {
        "paused": True
    }
    assert service.client.get("/v1/queue", headers=service.as_("alice")).json()["paused"] is True
    assert service.client.post("/v1/queue/resume", headers=service.as_("admin")).json() == {
        "paused": False
    }


def test_healthz_reports_database_and_broker(service):
    response = service.client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": "ok", "broker": "ok"}


def test_healthz_is_503_when_the_broker_is_unreachable(service_with):
    service = service_with(broker_url="redis://127.0.0.1:1/0")
    response = service.client.get("/healthz")
    assert response.status_code == 503
    assert response.json()["broker"].startswith("error")


def test_the_openapi_document_describes_the_upload_and_progress(service):
    spec = service.client.get("/openapi.json").json()
    upload = spec["paths"]["/v1/datasets"]["post"]["requestBody"]["content"]
    assert "multipart/form-data" in upload
    assert "peak_gpu_mem_bytes" in spec["components"]["schemas"]["ProgressRead"]["properties"]
    assert service.client.get("/docs").status_code == 200
