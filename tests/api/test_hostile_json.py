"""Malformed, huge and deeply nested JSON to the job endpoints: always a 4xx JSON answer that
names the reason, in bounded time and memory, never a 5xx.

test_system.py has the basic limits (413 over the size limit, 422 past 64 levels, brackets
inside strings, a few malformed bodies); these are the hostile variants.
"""

from __future__ import annotations

import asyncio
import json
import time
import tracemalloc

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from api.limits import JsonBodyLimit
from tests.conftest import small_payload

MiB = 1024 * 1024
ENDPOINTS = ["/v1/jobs", "/v1/jobs/validate"]


def _post(service, body: bytes, content_type: str | None = "application/json", path="/v1/jobs"):
    headers = service.as_("alice")
    if content_type is not None:
        headers["content-type"] = content_type
    return service.client.post(path, content=body, headers=headers)


def _reason(response) -> str:
    """The answer's reason, as one lower-case string (a message or the problems' messages)."""
    assert response.headers["content-type"].startswith("application/json"), response.text
    detail = response.json()["detail"]
    assert detail, response.text
    if isinstance(detail, str):
        return detail.lower()
    assert all(p["loc"] and p["msg"] for p in detail), detail
    return " ".join(f"{p['loc']} {p['msg']} {p['type']}" for p in detail).lower()


def _with_params(job_body: dict, raw_params: str) -> bytes:
    """The valid job body with its params replaced by raw JSON text (maybe not valid JSON)."""
    head = json.dumps({k: v for k, v in job_body.items() if k != "params"})
    return (head[:-1] + ', "params": ' + raw_params + "}").encode()


# body -> a word the reason must contain
SYNTAX = {
    b'{"dataset_id": "\xff\xfe"}': "utf-8",
    b'{"dataset_id": "caf\xe9"}': "utf-8",
    b'{"dataset_id": "\xed\xa0\x80"}': "utf-8",  # a surrogate encoded as UTF-8 (CESU)
    b"\x00\x00\x00{": "json",  # UTF-32 to a sniffing parser; UTF-8 NULs (no JSON) here
    b'{"dataset_id": "x",}': "json",
    b'{"dataset_id": "x"': "json",
    b"": "field required",
    b"   ": "json",
    b"\xef\xbb\xbf": "json",
}


@pytest.mark.parametrize("path", ENDPOINTS)
@pytest.mark.parametrize("body", list(SYNTAX), ids=repr)
def test_bodies_that_are_not_json_are_422_naming_why(service, body, path):
    response = _post(service, body, path=path)
    assert response.status_code == 422, response.text
    assert SYNTAX[body] in _reason(response)


NUMBERS = {
    "NaN": "nan",
    "-Infinity": "infinity",
    "Infinity": "infinity",
    "1e999": "out of range",
    "-1e999": "out of range",
    "1" + "0" * 5000: "too large",
}


@pytest.mark.parametrize("path", ENDPOINTS)
@pytest.mark.parametrize("number", list(NUMBERS), ids=lambda n: n[:12])
def test_non_finite_and_oversized_numbers_are_422(service, job_body, number, path):
    body = _with_params(job_body, '{"learning_rate": ' + number + "}")
    response = _post(service, body, path=path)
    assert response.status_code == 422, response.text
    assert NUMBERS[number] in _reason(response)


@pytest.mark.parametrize(
    "raw",
    [
        '{"dataset_id": "a", "dataset_id": "b"}',
        '{"dataset_id": "a", "base_model": "b", "params": {"epoch": 1, "epoch": 2}}',
        '{"params": [{"k": 1, "k": 1}]}',
    ],
)
def test_duplicate_keys_are_422_naming_the_key(service, raw):
    response = _post(service, raw.encode())
    assert response.status_code == 422, response.text
    assert "duplicate key" in _reason(response)


@pytest.mark.parametrize("escape", ["\\ud800", "\\udfff", "x\\ud83d", "\\ude00x"])
def test_lone_surrogate_escapes_are_422_not_an_encoding_crash(service, job_body, escape):
    """Crasher: ``"\\ud800"`` is valid JSON syntax but no character; pydantic refused it and
    the 422 echoing it back could not be encoded: a 500."""
    for field in ("name", "dataset_id"):
        body = json.dumps(job_body | {field: "@"}).replace("@", escape).encode()
        response = _post(service, body)
        assert response.status_code == 422, response.text
        assert "surrogate" in _reason(response)
    body = _with_params(job_body, '{"output_name": "' + escape + '"}')
    assert _post(service, body).status_code == 422


@pytest.mark.parametrize("field", ["name", "dataset_id", "base_model"])
def test_a_nul_character_in_any_string_is_422(service, job_body, field):
    """Crasher (PostgreSQL): text columns can't hold NUL; the INSERT failed, a 500."""
    body = json.dumps(job_body | {field: "a@b"}).replace("@", "\\u0000").encode()
    response = _post(service, body)
    assert response.status_code == 422, response.text
    assert "nul" in _reason(response)
    escaped = json.dumps(job_body | {"name": "a\\u0000b"}).encode()  # the text, not the char
    assert _post(service, escaped).status_code == 202


def test_a_422_names_fields_without_echoing_the_input(service, job_body):
    """FastAPI's 422 echoed each wrong input: a 1 MiB list came back several times, encoded
    in Python for seconds; now each problem is just where and why."""
    body = job_body | {"params": list(range(100_000)), "name": ["x"] * 1000}
    response = _post(service, json.dumps(body).encode())
    assert response.status_code == 422
    assert len(response.content) < 2000
    assert {p["type"] for p in response.json()["detail"]} and all(
        set(p) == {"loc", "msg", "type"} for p in response.json()["detail"]
    )


def test_a_utf8_bom_is_tolerated_and_a_real_surrogate_pair_is_a_character(service, job_body):
    assert _post(service, b"\xef\xbb\xbf" + json.dumps(job_body).encode()).status_code == 202
    body = json.dumps(job_body | {"name": "@"}).replace("@", "\\ud83d\\ude00").encode()
    response = _post(service, body)
    assert response.status_code == 202, response.text
    assert response.json()["name"] == "\U0001f600"


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/x-www-form-urlencoded", "application/xml", "image/png"],
)
def test_a_json_body_under_another_content_type_is_422(service, job_body, content_type):
    response = _post(service, json.dumps(job_body).encode(), content_type=content_type)
    assert response.status_code == 422, response.text
    assert "body" in _reason(response)


def test_a_multipart_body_to_the_job_endpoint_is_422(service, job_body):
    headers = service.as_("alice")
    response = service.client.post("/v1/jobs", headers=headers, files={"file": ("a", b"{}")})
    assert response.status_code == 422, response.text
    assert _reason(response)


def test_a_body_without_content_type_is_not_taken_for_json(service, job_body):
    """FastAPI's strict content type: a form post from another site can't submit a job."""
    response = _post(service, json.dumps(job_body).encode(), content_type=None)
    assert response.status_code == 422, response.text
    assert "body" in _reason(response)


DEEP = 50_000


@pytest.mark.parametrize(
    "raw",
    [
        "[" * DEEP + "]" * DEEP,
        '{"a":' * DEEP + "1" + "}" * DEEP,
        "[{" * (DEEP // 2) + "}]" * (DEEP // 2),
        "[" * DEEP,  # never closed
        '{"params": ' + '{"a": [' * DEEP,
    ],
    ids=["arrays", "objects", "mixed", "unclosed", "unclosed-in-params"],
)
def test_50k_deep_nesting_is_422_in_bounded_time(service, raw):
    started = time.perf_counter()
    response = _post(service, raw.encode())
    assert response.status_code == 422, response.text
    assert "nested deeper" in _reason(response)
    assert time.perf_counter() - started < 5


def _timed(call):
    started = time.perf_counter()
    return call(), time.perf_counter() - started


def _peak_memory(call):
    """Peak bytes Python allocated during the call (tracemalloc is slow: time it apart)."""
    tracemalloc.start()
    try:
        return call(), tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_a_20_mb_body_is_413_without_being_read(service):
    body = b'{"dataset_id": "' + b"x" * (20 * MiB) + b'"}'
    response, elapsed = _timed(lambda: _post(service, body))
    assert response.status_code == 413
    assert "larger than" in _reason(response)
    assert elapsed < 5


def _through_guard(chunks, content_type: bytes, path: str = "/v1/jobs", root_path: str = ""):
    """Runs the body guard alone on a streamed body: (status, chunks it pulled, app reached)."""
    pulled, sent, reached = [], [], []

    async def receive():
        chunk = next(chunks, None)
        pulled.append(chunk)
        return {"type": "http.request", "body": chunk or b"", "more_body": chunk is not None}

    async def send(message):
        sent.append(message)

    async def app(scope, receive, send):
        reached.append(True)
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    guard = JsonBodyLimit(app, max_bytes=MiB, max_depth=64, upload_paths=("/v1/datasets",))
    scope = {"type": "http", "method": "POST", "path": path, "root_path": root_path,
             "headers": [(b"content-type", content_type)]}  # fmt: skip
    asyncio.run(guard(scope, receive, send))
    return sent[0]["status"], len(pulled), bool(reached)


@pytest.mark.parametrize(
    "content_type", [b"application/json", b"multipart/form-data; boundary=x", b"text/plain"]
)
def test_a_20_mb_body_without_length_is_413_after_reading_just_past_the_limit(content_type):
    """No content-length (chunked): the guard stops reading at the limit, whatever the
    content type claims (FastAPI would read any body whole)."""
    chunks = iter([b" " * MiB] * 20)
    assert _through_guard(chunks, content_type) == (413, 2, False)


@pytest.mark.parametrize(("path", "root_path"), [("/v1/datasets", ""), ("/lb/v1/datasets", "/lb")])
def test_only_the_upload_route_streams_past_the_json_limit(path, root_path):
    chunks = iter([b"-" * MiB] * 20)
    multipart = b"multipart/form-data; boundary=x"
    assert _through_guard(chunks, multipart, path, root_path)[::2] == (204, True)


def test_a_large_multipart_body_to_the_job_endpoint_is_413(service):
    headers = service.as_("alice")
    response = service.client.post(
        "/v1/jobs", headers=headers, files={"file": ("a.zip", b"\0" * (2 * MiB))}
    )
    assert response.status_code == 413, response.text


@pytest.mark.parametrize(
    "raw", [b'\\"' * (MiB // 2 - 8), b'"\\' * (MiB // 2 - 8), b'"' * (MiB - 16)], ids=repr
)
def test_escaped_quotes_do_not_make_the_nesting_scan_quadratic(service, raw):
    """Crasher: the nesting scan's regex backtracked from every quote; 32 KiB of ``\\"``
    took 11 s, 1 MiB would have held the event loop for hours."""
    started = time.perf_counter()
    response = _post(service, raw)
    assert response.status_code == 422, response.text
    assert time.perf_counter() - started < 5


def test_a_lying_content_length_is_refused_not_waited_on(service):
    headers = service.as_("alice") | {"content-type": "application/json", "content-length": "1e9"}
    response = service.client.post("/v1/jobs", content=b"{}", headers=headers)
    assert 400 <= response.status_code < 500
    _reason(response)


def test_a_body_just_under_the_limit_full_of_numbers_parses_in_bounded_time(service):
    raw = ("[" + ",".join(["1.5e308"] * 100_000) + "]").encode()
    assert len(raw) < MiB
    response, elapsed = _timed(lambda: _post(service, raw))
    assert response.status_code == 422
    assert elapsed < 5
    response, peak = _peak_memory(lambda: _post(service, raw))
    assert response.status_code == 422
    assert peak < 64 * MiB, f"peak {peak / MiB:.1f} MiB"


SEED_KEYS = sorted(small_payload())
HOSTILE_VALUES = st.sampled_from(
    [0, -1, 1, 2**31, 2**62, -(2**63), 2**63 - 1, 0.0, -0.0, 1e-320, 1e308, -1e308, 0.5,
     "", " ", "0", "-1", "1e999", "nan", "inf", "x" * 5000, "64,64", "0,0", "99999999,99999999",
     "-64,-64", "64", "a,b", "1,2,3", "../../etc/passwd", "/abs", "\u202e", True, False, None,
     [], [1], {}, {"a": 1}, ["x"] * 100]
)  # fmt: skip


@given(changes=st.dictionaries(st.sampled_from(SEED_KEYS), HOSTILE_VALUES, min_size=1, max_size=3))
@settings(
    max_examples=60,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
def test_extreme_payload_values_are_200_or_422_never_5xx(service, job_body, changes):
    """Kohya fields set to extremes (2**62 epochs, a 1e308 learning rate, "0,0" resolution,
    wrong types): validate answers a plan or a 422 naming the field, never a crash."""
    body = job_body | {"params": job_body["params"] | changes}
    response = _post(service, json.dumps(body).encode(), path="/v1/jobs/validate")
    assert response.status_code in (200, 422), response.text
    if response.status_code == 422:
        _reason(response)
