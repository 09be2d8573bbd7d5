"""schemathesis hooks for tests/api/test_openapi_conformance.py, loaded by the `st run` it
starts (its config's ``hooks``): one check of our own, and the data the schema can't state.

The check: every error answer (4xx, 5xx) is JSON with a reason in ``detail`` (api/errors.py),
405s and 404s from routing included.

The schema states every constraint a request's shape can carry. What it cannot state is the
server's state and its semantic rules: which datasets and models exist, which Kohya payloads
train, which webhook hosts the operator allowed. A schema-valid request naming a dataset that
doesn't exist is rightly refused, and schemathesis' positive_data_acceptance would call that a
lie. So positive cases get those values from the server (the way schemathesis' docs say to seed
known ids), and the rest of each request stays generated; negative cases stay as generated.

- a dataset upload's ``file`` (the document says ``application/zip``): a real dataset zip, as
  a media-type strategy, so generated uploads (positive ones) are accepted;
- a submission's ``dataset_id`` / ``reg_dataset_id``: kept when it names one of the caller's
  datasets (an upload's id passed on by a link), else the caller's newest one, asked of the
  server at that moment (a run deletes datasets too); ``base_model``: the catalog's model;
  ``params``: a payload that validates; ``notify_url``: none (webhooks are off here);
  ``priority``: not ``high``, which only admins may set (core/jobs/priorities.py);
- a job listing's or the queue's ``cursor`` (an opaque token the server issued): one the
  server gives now, or none when the caller has a single page.
"""

from __future__ import annotations

from typing import Any

import httpx
import schemathesis
from hypothesis import strategies as st

from tests.conftest import png_bytes, small_payload, zip_bytes

SUBMISSIONS = ("POST /v1/jobs", "POST /v1/jobs/validate")
LISTINGS = ("GET /v1/jobs", "GET /v1/queue")


def _dataset_zip(folder: str, repeats: int | None, captioned: bool) -> bytes:
    prefix = f"{repeats}_" if repeats else ""
    files = {f"{prefix}{folder}/a.png": png_bytes(32, 32)}
    if captioned:
        files[f"{prefix}{folder}/a.txt"] = b"a toy"
    return zip_bytes(files)


# A few shapes of a good dataset: with and without the N_ prefix, captioned or not.
DATASET_ZIPS = st.builds(
    _dataset_zip,
    st.sampled_from(["toy", "cat", "a b"]),
    st.sampled_from([None, 1, 3]),
    st.booleans(),
)
schemathesis.openapi.media_type("application/zip", DATASET_ZIPS)


@schemathesis.check
def errors_are_json_with_a_reason(ctx: Any, response: Any, case: Any) -> bool | None:
    if response.status_code < 400:
        return None
    content_type = response.headers.get("content-type", [""])[0]
    assert content_type.startswith("application/json"), f"an error as {content_type!r}"
    assert response.json().get("detail"), f"an error without a reason: {response.text[:200]}"
    return None


def _positive(case: Any) -> bool:
    return case.meta is not None and case.meta.generation.mode.is_positive


def _client(case: Any, token: str) -> httpx.Client:
    base = case.operation.schema.get_base_url()
    return httpx.Client(base_url=base, headers={"Authorization": token}, timeout=30)


def _datasets_of(case: Any, token: str) -> list[str]:
    """The ids of the caller's datasets now, newest first; uploads one if there is none."""
    with _client(case, token) as client:
        ids = [d["id"] for d in client.get("/v1/datasets").raise_for_status().json()["items"]]
        if not ids:
            upload = {"file": ("seed.zip", _dataset_zip("seed", 1, True), "application/zip")}
            ids = [client.post("/v1/datasets", files=upload).raise_for_status().json()["id"]]
    return ids


def _issued_cursor(case: Any, token: str) -> str | None:
    with _client(case, token) as client:
        page = client.get(case.operation.path, params={"limit": 1}).json()
    cursor: str | None = page["next_cursor"]
    return cursor


def _steer_submission(case: Any, body: dict[str, Any], token: str) -> None:
    live = _datasets_of(case, token)
    # In place: the case keeps its generation metadata (assigning would re-judge it).
    if body.get("dataset_id") not in live:
        body["dataset_id"] = live[0]
    if body.get("reg_dataset_id") not in (None, *live):
        body["reg_dataset_id"] = live[0]
    body.update(base_model="base", params=small_payload(), notify_url=None)
    if body.get("priority") == "high":
        body["priority"] = "normal"


def _steer_listing(case: Any, query: dict[str, Any], token: str) -> None:
    cursor = _issued_cursor(case, token)
    if cursor is None:
        del query["cursor"]
    else:
        query["cursor"] = cursor


@schemathesis.hook
def before_call(context: Any, case: Any, **kwargs: Any) -> None:
    token = (case.headers or {}).get("Authorization")
    if not _positive(case) or not token:  # without a token: refused before the rest is read
        return
    label = case.operation.label
    if label in SUBMISSIONS and isinstance(case.body, dict):
        _steer_submission(case, case.body, token)
    elif label in LISTINGS and case.query and "cursor" in case.query:
        _steer_listing(case, case.query, token)
