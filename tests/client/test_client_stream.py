"""lorabox_client on a scripted server (the HTTP edge is the only thing faked): the event
stream resumes with Last-Event-ID after a dropped connection, ``wait`` polls when the stream
can't be followed, errors are typed, and the ETA shown is the server's, smoothed."""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from lorabox_client import (
    ConnectionFailed,
    Lorabox,
    NotFound,
    TooManyQueued,
    Unavailable,
    ValidationFailed,
)
from lorabox_client.progress import EtaSmoother, ProgressBar, progress_line

JOB = "a" * 32


def sse(event_id: int, kind: str, data: dict[str, Any]) -> bytes:
    return f"id: {event_id}\r\nevent: {kind}\r\ndata: {json.dumps(data)}\r\n\r\n".encode()


def progress_event(event_id: int, step: int) -> bytes:
    return sse(event_id, "progress", {"phase": "training", "step": step, "total_steps": 4,
                                      "epoch": 1, "total_epochs": 2, "avg_loss": 0.1,
                                      "eta_s": 10.0 * (4 - step)})  # fmt: skip


class Server:
    """A scripted lorabox: the job's state as ``job``; each events connection answered by the
    next of ``streams`` (bytes, then an exception or the end); every request recorded."""

    def __init__(self, streams: list[Callable[[], Iterator[bytes]]], **job: Any) -> None:
        self.streams = streams
        self.job: dict[str, Any] = {"id": JOB, "status": "running", "attempt": 1,
                                    "progress": {"phase": "loading"}} | job  # fmt: skip
        self.requests: list[httpx.Request] = []
        self.polls_until_done: int | None = None

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.url.path.endswith("/events"):
            if not self.streams:
                return httpx.Response(502, json={"detail": "no more streams scripted"})
            body = self.streams.pop(0)()
            return httpx.Response(200, headers={"content-type": "text/event-stream"},
                                  content=body)  # fmt: skip
        if self.polls_until_done is not None:
            self.polls_until_done -= 1
            if self.polls_until_done <= 0:
                self.job["status"] = "succeeded"
        return httpx.Response(200, json=self.job)

    def client(self) -> Lorabox:
        return Lorabox("http://lorabox.test", "t", transport=httpx.MockTransport(self))

    def last_event_ids(self) -> list[str | None]:
        return [r.headers.get("last-event-id") for r in self.requests
                if r.url.path.endswith("/events")]  # fmt: skip


def dropped_after(*chunks: bytes) -> Callable[[], Iterator[bytes]]:
    def body() -> Iterator[bytes]:
        yield from chunks
        raise httpx.ReadError("connection reset by peer")

    return body


def ends_with(*chunks: bytes) -> Callable[[], Iterator[bytes]]:
    return lambda: iter(chunks)


def test_the_stream_resumes_after_a_dropped_connection_with_no_gap_and_no_repeat():
    finished = sse(4, "finished", {"status": "succeeded"})
    server = Server(
        [
            dropped_after(progress_event(1, 1), progress_event(2, 2), b"id: 3\r\nevent: prog"),
            dropped_after(),  # a reconnect that gets nothing: tried again, from the same place
            ends_with(progress_event(3, 3), finished),
        ],
        status="succeeded",
    )  # fmt: skip  (ended meanwhile: the rest is still to be read)
    job = server.client().job(JOB)
    job._sleep = lambda _s: None
    events = list(job.events())
    assert [(e.id, e.type) for e in events] == [
        (1, "progress"), (2, "progress"), (3, "progress"), (4, "finished")
    ]  # fmt: skip
    assert [e.data["step"] for e in events[:3]] == [1, 2, 3]
    assert server.last_event_ids() == [None, "2", "2"]


def test_wait_follows_the_stream_and_returns_the_ended_job():
    server = Server([ends_with(sse(1, "phase", {"phase": "caching"}), progress_event(2, 4),
                               sse(3, "finished", {"status": "succeeded"}))])  # fmt: skip
    seen: list[str] = []
    original = server.__call__

    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/events"):
            server.job["status"] = "succeeded"  # the last read (after `finished`) sees the end
        return original(request)

    client = Lorabox("http://lorabox.test", "t", transport=httpx.MockTransport(answer))
    job = client.job(JOB).wait(on_event=lambda e: seen.append(e.type))
    assert job.status == "succeeded" and seen == ["phase", "progress", "finished"]
    assert len(server.last_event_ids()) == 1  # one connection, no polling


@pytest.mark.parametrize(
    "streams",
    [
        # A proxy that buffers or rewrites: an answer that is not an event stream.
        "html",
        # A line that keeps dropping before any event arrives.
        [dropped_after()] * 5,
    ],
    ids=["not an event stream", "connection keeps dropping"],
)
def test_wait_falls_back_to_polling_when_the_stream_cannot_be_followed(streams):
    server = Server([] if streams == "html" else list(streams))
    server.polls_until_done = 8
    if streams == "html":
        original = server.__call__

        def answer(request: httpx.Request) -> httpx.Response:
            if request.url.path.endswith("/events"):
                server.requests.append(request)
                return httpx.Response(200, text="<html>buffered</html>")
            return original(request)

        transport = httpx.MockTransport(answer)
    else:
        transport = httpx.MockTransport(server)
    job = Lorabox("http://lorabox.test", "t", transport=transport).job(JOB)
    job._sleep = lambda _s: None
    assert job.wait(interval_s=0).status == "succeeded"
    polls = [r for r in server.requests if r.url.path == f"/v1/jobs/{JOB}"]
    assert len(server.last_event_ids()) == (1 if streams == "html" else 5)
    assert len(polls) >= 8  # polled to the end after giving up on the stream


@pytest.mark.parametrize(
    ("status", "body", "headers", "kind"),
    [
        (404, {"detail": "job not found"}, {}, NotFound),
        (429, {"detail": "too many queued"}, {"Retry-After": "30"}, TooManyQueued),
        (503, {"detail": "the database is unavailable"}, {"Retry-After": "5"}, Unavailable),
    ],
)
def test_each_http_problem_is_its_own_error_with_the_apis_detail(status, body, headers, kind):
    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, json=body, headers=headers)

    client = Lorabox("http://lorabox.test", "t", transport=httpx.MockTransport(answer))
    with pytest.raises(kind) as caught:
        client.job(JOB)
    assert caught.value.status == status and caught.value.detail == body["detail"]
    assert caught.value.retry_after == (float(headers["Retry-After"]) if headers else None)


def test_a_422_lists_every_problem_with_its_field():
    detail = [
        {"loc": ["body", "params", "learning_rate"], "msg": "not a number", "type": "x"},
        {"loc": ["body", "base_model"], "msg": "no SDXL model named 'm'", "type": "y"},
    ]

    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/models":
            return httpx.Response(200, json={"items": [{"name": "tiny-sdxl", "kind": "sdxl"}]})
        return httpx.Response(422, json={"detail": detail})

    client = Lorabox("http://lorabox.test", "t", transport=httpx.MockTransport(answer))
    with pytest.raises(ValidationFailed) as caught:
        client.check({"learning_rate": "fast"}, model="m")
    problems = caught.value.problems
    assert [p.field for p in problems] == ["params.learning_rate", "base_model"]
    assert "this server has: tiny-sdxl" in problems[1].msg  # from GET /v1/models
    assert "body.params.learning_rate: not a number" in str(caught.value)


def test_an_unreachable_server_is_connection_failed():
    def answer(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused")

    client = Lorabox("http://lorabox.test", "t", transport=httpx.MockTransport(answer))
    with pytest.raises(ConnectionFailed, match="cannot reach the server"):
        client.models()


def test_the_eta_shown_follows_the_server_smoothly_not_one_slow_step():
    now = [0.0]
    eta = EtaSmoother(tau_s=20, clock=lambda: now[0])
    assert eta.update(22) == 22
    now[0] = 1
    jumped = eta.update(1595)  # the 00:22 -> 26:35 after one slow step
    assert jumped is not None and 21 < jumped < 25
    for second in range(1, 121):  # then, for two minutes, a steady finish 04:13 after t=1
        now[0] = 1 + second
        shown = eta.update(253 - second)
    assert shown == pytest.approx(253 - 120, rel=0.02)
    burst = eta.update(10_000)  # a replayed burst (no time passed) doesn't move it
    assert burst == shown


def test_the_bar_says_what_a_job_does_before_its_first_step():
    for phase, words in (("loading", "loading the base model"), ("caching", "caching latents")):
        job = {"status": "running", "progress": {"phase": phase, "step": 0, "total_steps": 0,
                                                 "epoch": 0, "total_epochs": 0}}  # fmt: skip
        line = progress_line(job)
        assert line.startswith(f"running: {words}") and "0/0" not in line, line
    training = {"status": "running", "progress": {"phase": "training", "step": 3,
                "total_steps": 12, "epoch": 1, "total_epochs": 4, "avg_loss": 0.25,
                "eta_s": 90.0}}  # fmt: skip
    assert progress_line(training) == (
        f"[{'#' * 7}{'-' * 23}] 3/12 epoch 1/4 loss 0.2500 ETA 01:30"
    )


def test_a_queued_job_says_why_it_waits_or_when_it_starts():
    queued = {"status": "queued", "queue_position": 2, "blocked_reason": "gpu_memory"}
    assert progress_line(queued) == "queued (position 2, waiting: gpu memory)"
    out = io.StringIO()
    bar = ProgressBar(out)
    bar.show({"status": "queued", "queue_position": 1,
              "estimated_start_at": "2000-01-01T00:00:00Z"})  # fmt: skip
    assert out.getvalue() == "queued (position 1, starts in ~00:00)\n"


def test_the_bar_never_goes_back_to_a_moment_the_stream_replays():
    out, now = io.StringIO(), [0.0]
    bar = ProgressBar(out, log_every_s=0, clock=lambda: now[0])

    def running(phase: str, step: int, attempt: int = 1) -> dict[str, Any]:
        return {
            "status": "running",
            "attempt": attempt,
            "progress": {
                "phase": phase,
                "step": step,
                "total_steps": 4,
                "epoch": 1,
                "total_epochs": 2,
            },
        }

    for job in (
        running("training", 2),
        running("loading", 0),
        running("caching", 0),
        running("training", 1),
        running("training", 3),
        running("loading", 0, 2),
    ):
        now[0] += 1
        bar.show(job)
    lines = out.getvalue().splitlines()
    assert [line.split("]")[1].split()[0] if "]" in line else line for line in lines] == [
        "2/4",
        "3/4",
        "running: loading the base model",
    ]  # the replayed 0, 0, 1 not shown
