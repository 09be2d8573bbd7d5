"""lorabox_client against a real API process: a wrong model or payload costs no upload, an
identical dataset is reused (never across users), `lorabox models list` shows the server's
models, and a real job's event stream resumes after the network cuts it mid-event."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from core.settings import Settings
from lorabox_client import Lorabox, ValidationFailed
from tests.watched_job import WatchStack
from tests.worker.conftest import prepare, served


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory, tiny_models_dir: Path) -> Iterator[WatchStack]:
    """The API with the miniature SDXL and no worker: submitted jobs stay queued."""
    home = tmp_path_factory.mktemp("client-api-home")
    shutil.copytree(tiny_models_dir, home / "models")
    settings = Settings(home=home, models_dir=home / "models")
    tokens = prepare(settings)
    with served(settings, worker=False) as (client, logs):
        yield WatchStack(client, settings, tokens, logs, url=str(client.base_url).rstrip("/"))


def _client(api: WatchStack, user: str) -> Lorabox:
    return Lorabox(api.url, api.tokens[user])


def test_a_wrong_model_or_payload_is_refused_before_anything_is_uploaded(
    api, toy_dataset_dir, payload, write_payload
):
    lorabox = _client(api, "alice")
    params = payload(max_resolution="64,64", learning_rate="fast")
    with pytest.raises(ValidationFailed) as caught:
        lorabox.submit(params, dataset=toy_dataset_dir, model="sdxl-base")
    problems = {p.field: p.msg for p in caught.value.problems}
    assert {"base_model", "params.learning_rate"} <= set(problems), problems
    assert "this server has: tiny-sdxl" in problems["base_model"]
    assert "dataset_id" not in problems  # the check ran before any dataset existed
    done = api.cli("submit", str(write_payload()), "--dataset", str(toy_dataset_dir),
                   "--model", "sdxl-base")  # fmt: skip
    assert (done.returncode, done.stdout) == (3, "")
    assert "base_model" in done.stderr and "tiny-sdxl" in done.stderr
    assert lorabox.datasets() == []  # neither uploaded anything


def test_an_identical_dataset_is_reused_not_uploaded_again_and_never_across_users(
    api, toy_dataset_dir, payload, write_payload, tmp_path
):
    bob = _client(api, "bob")
    params = payload(max_resolution="64,64")
    first = bob.submit(params, dataset=toy_dataset_dir, model="tiny-sdxl", name="first")
    # The same files elsewhere, touched since: zipped again, they give the same bytes.
    copy = tmp_path / "copy"
    shutil.copytree(toy_dataset_dir, copy)
    for path in copy.rglob("*"):
        os.utime(path, (1e9, 1e9))
    second = bob.submit(params, dataset=copy, model="tiny-sdxl", name="second")
    assert first.dataset is not None and second.dataset is not None
    assert (first.dataset.reused, second.dataset.reused) == (False, True)
    assert second.data["dataset_id"] == first.data["dataset_id"] == first.dataset.id
    assert len(bob.datasets()) == 1
    cli = api.cli("submit", str(write_payload()), "--dataset", str(copy), "--model",
                  "tiny-sdxl", user="bob")  # fmt: skip
    assert cli.returncode == 0 and "reused" in cli.stderr, cli.stderr
    (copy / "1_toy" / "0.txt").write_text("a different caption")
    changed = bob.submit(params, dataset=copy, model="tiny-sdxl")
    assert changed.dataset is not None and not changed.dataset.reused
    alices = _client(api, "alice").submit(params, dataset=toy_dataset_dir, model="tiny-sdxl")
    assert alices.dataset is not None and not alices.dataset.reused  # bob's is bob's
    refused = api.get("/v1/datasets", user="bob", params={"sha256": "not-a-digest"})
    assert refused.status_code == 422


def test_models_list_shows_the_servers_models(api):
    done = api.cli("models", "list")
    assert done.returncode == 0, done.stderr
    header, *rows = done.stdout.splitlines()
    assert header.split() == ["NAME", "KIND", "FORMAT", "SIZE", "SHA256"]
    listed = api.get("/v1/models").json()["items"]
    assert [row.split()[:3] for row in rows] == [
        [m["name"], m["kind"], m["format"]] for m in listed
    ]
    assert ["tiny-sdxl", "sdxl"] in [row.split()[:2] for row in rows]


class CuttingProxy:
    """A TCP proxy to the API that, on the first connection carrying an events request,
    forwards ``cut_after`` bytes of the answer and then closes both sides: a network that
    drops a stream mid-event. Every other byte passes through."""

    def __init__(self, upstream_port: int, cut_after: int | None) -> None:
        self.upstream_port, self.cut_after = upstream_port, cut_after
        self.requests: list[bytes] = []
        self.answered = 0  # bytes of the events answers so far, when nothing is cut
        self._cut_done = False
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            watched: dict[str, Any] = {"events": False, "sent": 0}
            threading.Thread(target=self._pump_requests, args=(client, upstream, watched),
                             daemon=True).start()  # fmt: skip
            threading.Thread(target=self._pump_answers, args=(upstream, client, watched),
                             daemon=True).start()  # fmt: skip

    def _pump_requests(self, src: socket.socket, dst: socket.socket, watched: dict) -> None:
        while data := _recv(src):
            self.requests.append(data)
            if b"/events" in data and not self._cut_done:
                watched["events"] = True  # before forwarding: the answer comes after
            dst.sendall(data)
        _close(src, dst)

    def _pump_answers(self, src: socket.socket, dst: socket.socket, watched: dict) -> None:
        while data := _recv(src):
            if watched["events"] and not self._cut_done:
                if self.cut_after is not None and watched["sent"] + len(data) >= self.cut_after:
                    dst.sendall(data[: self.cut_after - watched["sent"]])
                    self._cut_done = True
                    break
                watched["sent"] += len(data)
                self.answered = watched["sent"]
            dst.sendall(data)
        _close(src, dst)

    def close(self) -> None:
        self._listener.close()


def _recv(sock: socket.socket) -> bytes:
    try:
        return sock.recv(65536)
    except OSError:
        return b""


def _close(*socks: socket.socket) -> None:
    for sock in socks:
        with contextlib.suppress(OSError):  # the other pump closed it first
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()


@pytest.fixture
def proxy(watch_stack: WatchStack) -> Iterator[Callable[[int | None], CuttingProxy]]:
    made: list[CuttingProxy] = []

    def make(cut_after: int | None) -> CuttingProxy:
        made.append(CuttingProxy(int(watch_stack.url.rsplit(":", 1)[1]), cut_after))
        return made[-1]

    yield make
    for each in made:
        each.close()


@pytest.mark.slow
def test_a_real_jobs_stream_cut_mid_event_resumes_with_no_gap_and_no_repeat(
    watch_stack, watched, proxy
):
    token = watch_stack.tokens["alice"]
    whole = proxy(None)
    with Lorabox(whole.url, token) as lorabox:
        events = list(lorabox.job(watched.job["id"]).events())
    half = whole.answered // 2  # the middle of that answer, in bytes
    ids = [e.id for e in events if e.id is not None]
    assert len(ids) == len(events) and ids == sorted(set(ids))
    assert events[-1].type == "finished"
    assert {"phase", "progress", "artifact"} <= {e.type for e in events}
    middle = ids[len(ids) // 2]
    with Lorabox(whole.url, token) as lorabox:
        after = [e.id for e in lorabox.job(watched.job["id"]).events(last_event_id=middle)]
    assert after == [i for i in ids if i > middle]

    cutting = proxy(half)
    with Lorabox(cutting.url, token) as lorabox:
        resumed = list(lorabox.job(watched.job["id"]).events())
    assert [(e.id, e.type, e.data) for e in resumed] == [(e.id, e.type, e.data) for e in events]
    resumes = [r for r in cutting.requests if b"/events" in r and b"last-event-id" in r.lower()]
    assert len(resumes) == 1, cutting.requests
