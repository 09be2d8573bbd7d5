"""The OpenAPI document, completed where FastAPI's generator says less than the API does.

- A query or header parameter typed ``X | None`` comes out as ``anyOf: [X, {type: null}]``.
  Such a parameter can be absent (``required: false``), never null: a query string or a header
  carries text, so a client following the document sent ``Last-Event-ID: null`` and was
  refused. The null branch is dropped.
- Links (OpenAPI 3.1, "Link Object") say where a created id goes next: a dataset's id to a
  submission's ``dataset_id`` and to the dataset's own operations, a job's id to the job's
  operations. Clients read them as documentation; schemathesis' stateful phase follows them
  (tests/api/test_openapi_conformance.py).

It also answers which methods a URL path has, for a 405's Allow (api/errors.py).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI

# Link name -> (path, method) of the operation a created id is passed to.
_DATASET = "$response.body#/id"
_JOB_TARGETS = {
    "GetJob": ("/v1/jobs/{job_id}", "get"),
    "CancelJob": ("/v1/jobs/{job_id}/cancel", "post"),
    "StopJob": ("/v1/jobs/{job_id}/stop", "post"),
    "DeleteJob": ("/v1/jobs/{job_id}", "delete"),
    "ListArtifacts": ("/v1/jobs/{job_id}/artifacts", "get"),
    "ReadLog": ("/v1/jobs/{job_id}/logs", "get"),
    "ReadMetrics": ("/v1/jobs/{job_id}/metrics", "get"),
    "LossChart": ("/v1/jobs/{job_id}/loss.png", "get"),
    "FollowEvents": ("/v1/jobs/{job_id}/events", "get"),
}
_DATASET_TARGETS = {
    "GetDataset": ("/v1/datasets/{dataset_id}", "get"),
    "DeleteDataset": ("/v1/datasets/{dataset_id}", "delete"),
}
_SUBMISSIONS = {"SubmitJob": ("/v1/jobs", "post"), "ValidateJob": ("/v1/jobs/validate", "post")}


def _without_null(schema: dict[str, Any]) -> dict[str, Any]:
    branches = schema.get("anyOf")
    if not isinstance(branches, list):
        return schema
    kept = [b for b in branches if b != {"type": "null"}]
    if len(kept) != 1 or len(kept) == len(branches):
        return schema
    outer = {k: v for k, v in schema.items() if k != "anyOf" and not (k == "default" and v is None)}
    return kept[0] | outer


def _drop_null_parameters(document: dict[str, Any]) -> None:
    for operations in document.get("paths", {}).values():
        for operation in operations.values():
            for parameter in operation.get("parameters", []):
                if parameter.get("in") in ("query", "header", "cookie") and "schema" in parameter:
                    parameter["schema"] = _without_null(parameter["schema"])


def _operation_id(document: dict[str, Any], path: str, method: str) -> str | None:
    operation = document.get("paths", {}).get(path, {}).get(method)
    return operation.get("operationId") if operation else None


def _links(document: dict[str, Any], targets: dict[str, tuple[str, str]], **where: Any) -> dict:
    links = {}
    for name, (path, method) in targets.items():
        operation_id = _operation_id(document, path, method)
        if operation_id is not None:
            links[name] = {"operationId": operation_id, **where}
    return links


def _add_links(document: dict[str, Any]) -> None:
    paths = document.get("paths", {})
    upload = paths.get("/v1/datasets", {}).get("post")
    if upload is not None:
        links = _links(document, _DATASET_TARGETS, parameters={"path.dataset_id": _DATASET})
        links |= _links(document, _SUBMISSIONS, requestBody={"dataset_id": _DATASET})
        upload["responses"]["201"]["links"] = links
    submit = paths.get("/v1/jobs", {}).get("post")
    if submit is not None:
        links = _links(document, _JOB_TARGETS, parameters={"path.job_id": "$response.body#/id"})
        for status in ("200", "202"):  # a replayed Idempotency-Key answers 200
            if status in submit["responses"]:
                submit["responses"][status]["links"] = links


_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


def path_methods(document: dict[str, Any], path: str) -> list[str]:
    """The methods the document gives the URL path ``path`` (HEAD too where GET is: Starlette
    answers it), for a 405's Allow (api/errors.py); [] when no documented path matches.

    A concrete path wins over a templated one that also matches (OpenAPI 3.1, "Paths Object":
    ``/v1/jobs/validate`` before ``/v1/jobs/{job_id}``), then the fewest parameters."""
    matches = []
    for template, operations in document.get("paths", {}).items():
        pattern = "".join(
            "[^/]+" if part.startswith("{") else re.escape(part)
            for part in re.split(r"(\{[^}]+\})", template)
        )
        if re.fullmatch(pattern, path):
            matches.append((template.count("{"), template, operations))
    if not matches:
        return []
    operations = min(matches)[2]
    methods = {m.upper() for m in operations if m in _METHODS}
    if "GET" in methods:
        methods.add("HEAD")
    return sorted(methods)


def install(app: FastAPI) -> None:
    """Serve the completed document at ``/openapi.json`` (and to /docs, /redoc)."""
    generate: Callable[[], dict[str, Any]] = app.openapi

    def document() -> dict[str, Any]:
        if app.openapi_schema is None:
            built = generate()
            _drop_null_parameters(built)
            _add_links(built)
            app.openapi_schema = built
        return app.openapi_schema

    app.openapi = document  # type: ignore[method-assign]
