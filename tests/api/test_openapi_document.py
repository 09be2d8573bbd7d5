"""The OpenAPI document states what the API enforces, and a 405 lists every method of its path
(RFC 9110 section 15.5.6). The full schemathesis run is test_openapi_conformance.py; these name
each rule on its own and fail fast."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize(
    ("path", "allow"),
    [
        ("/v1/datasets", "GET, HEAD, POST"),  # Starlette said POST: the first route's only
        ("/v1/datasets/d", "DELETE, GET, HEAD"),
        ("/v1/jobs/j", "DELETE, GET, HEAD, PATCH"),
        ("/v1/session", "DELETE, POST"),
        ("/v1/jobs/validate", "POST"),  # concrete before /v1/jobs/{job_id}
    ],
)
def test_a_405_allows_every_method_of_its_path(service, path, allow):
    response = service.client.options(path, headers=service.as_("alice"))
    assert response.status_code == 405
    assert response.headers["allow"] == allow
    assert response.json()["detail"]


def _parameters(document: dict, path: str, method: str) -> dict[str, dict]:
    return {p["name"]: p for p in document["paths"][path][method].get("parameters", [])}


def test_the_document_states_the_constraints_the_api_enforces(service):
    document = service.client.get("/openapi.json").json()
    for operations in document["paths"].values():
        for operation in operations.values():
            for parameter in operation.get("parameters", []):  # absent, never null
                assert {"type": "null"} not in parameter["schema"].get("anyOf", []), parameter
    key = _parameters(document, "/v1/jobs", "post")["idempotency-key"]["schema"]
    assert (key["minLength"], key["maxLength"]) == (1, 200)
    cursor = _parameters(document, "/v1/jobs", "get")["cursor"]["schema"]
    assert cursor["pattern"] == "^[A-Za-z0-9_-]+$"
    events = _parameters(document, "/v1/jobs/{job_id}/events", "get")
    assert events["Last-Event-ID"]["schema"]["pattern"] == "^[0-9]{1,18}$"
    body = document["components"]["schemas"]["JobCreate"]["properties"]
    assert body["dataset_id"]["minLength"] == body["base_model"]["minLength"] == 1
    form = document["paths"]["/v1/datasets"]["post"]["requestBody"]["content"]
    assert form["multipart/form-data"]["encoding"]["file"]["contentType"] == "application/zip"


@pytest.mark.parametrize(
    ("headers", "field"),
    [
        ({"Idempotency-Key": ""}, "idempotency-key"),
        ({"Idempotency-Key": "k" * 201}, "idempotency-key"),
        ({"Idempotency-Key": "caf\u00e9".encode("latin-1")}, "idempotency-key"),
    ],
)
def test_a_key_the_document_refuses_is_refused(service, job_body, headers, field):
    response = service.submit("alice", job_body, **headers)
    assert response.status_code == 422
    assert [p["loc"][-1].lower() for p in response.json()["detail"]] == [field]


def test_an_empty_id_is_refused_like_the_document_says(service, job_body):
    response = service.submit("alice", job_body | {"dataset_id": "", "base_model": ""})
    assert response.status_code == 422
    assert {p["loc"][-1] for p in response.json()["detail"]} == {"dataset_id", "base_model"}


def test_the_last_event_id_header_takes_digits_only(service):
    response = service.client.get(
        "/v1/jobs/nope/events", headers=service.as_("alice") | {"Last-Event-ID": "null"}
    )
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["header", "Last-Event-ID"]


def test_links_lead_from_an_upload_and_a_submission_to_what_they_made(service):
    document = service.client.get("/openapi.json").json()
    upload = document["paths"]["/v1/datasets"]["post"]["responses"]["201"]["links"]
    assert upload["SubmitJob"]["requestBody"] == {"dataset_id": "$response.body#/id"}
    assert upload["GetDataset"]["parameters"] == {"path.dataset_id": "$response.body#/id"}
    submit = document["paths"]["/v1/jobs"]["post"]["responses"]["202"]["links"]
    assert {"GetJob", "CancelJob", "DeleteJob", "FollowEvents"} <= set(submit)
    operation_ids = {op["operationId"] for ops in document["paths"].values() for op in ops.values()}
    assert {link["operationId"] for link in [*upload.values(), *submit.values()]} <= operation_ids
