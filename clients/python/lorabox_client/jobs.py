"""A job on the server: its state, its live events, waiting for it, its files."""

from __future__ import annotations

import errno
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath
from typing import Any, TextIO

import httpx

from lorabox_client.datasets import Dataset
from lorabox_client.errors import (
    ApiError,
    ConnectionFailed,
    LoraboxError,
    NotFound,
    NothingToDownload,
    ServerError,
    StreamUnavailable,
)
from lorabox_client.events import Event, Keepalive, parse
from lorabox_client.http import Http
from lorabox_client.progress import ProgressBar

TERMINAL = ("succeeded", "failed", "cancelled")
# The server pings every 15 s (api/routes/stream.py); three missed pings mean a dead line.
STREAM_TIMEOUT = httpx.Timeout(30, read=45)
# Consecutive connections that end without one event before Job.wait polls instead.
MAX_STREAM_FAILURES = 5


class TargetExists(FileExistsError):
    """``Job.download`` refused: files it would write exist already (``force=True``
    overwrites them). ``paths``: every one of them, checked before the first byte."""

    def __init__(self, paths: list[Path]) -> None:
        self.paths = paths
        names = ", ".join(str(p) for p in paths)
        verb = "exists" if len(paths) == 1 else "exist"
        super().__init__(errno.EEXIST, f"{names} already {verb}", str(paths[0]))

    def __str__(self) -> str:
        return str(self.strerror)


def _target(directory: Path, name: str) -> Path:
    """Where artifact ``name`` goes: inside ``directory``, whatever the server sent."""
    parts = PurePosixPath(name).parts
    if not parts or name.startswith("/") or any(p in ("..", "") for p in parts):
        raise LoraboxError(f"the server named an artifact that leaves the folder: {name!r}")
    return directory.joinpath(*parts)


class Job:
    """A job as last read (``data``, the API's ``JobRead``); ``refresh()`` reads it again.

    ``dataset``: for a job from ``Lorabox.submit``, the dataset it trains on (uploaded or
    reused)."""

    def __init__(
        self,
        http: Http,
        data: dict[str, Any],
        *,
        dataset: Dataset | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._http, self.data, self.dataset, self._sleep = http, data, dataset, sleep
        self._last_event_id: int | None = None

    def __repr__(self) -> str:
        return f"Job(id={self.id!r}, status={self.status!r}, name={self.name!r})"

    @property
    def id(self) -> str:
        return str(self.data["id"])

    @property
    def status(self) -> str:
        return str(self.data["status"])

    @property
    def name(self) -> str | None:
        return self.data.get("name")

    @property
    def progress(self) -> dict[str, Any]:
        return dict(self.data.get("progress") or {})

    @property
    def error(self) -> dict[str, Any] | None:
        """``{code, message}`` when the job failed."""
        return self.data.get("error")

    @property
    def finished(self) -> bool:
        return self.status in TERMINAL

    def refresh(self) -> Job:
        self.data = self._http.json("GET", f"/v1/jobs/{self.id}")
        return self

    def cancel(self) -> Job:
        """A queued job never starts; a running one stops within a step (``cancelled``)."""
        self.data = self._http.json("POST", f"/v1/jobs/{self.id}/cancel")
        return self

    def stop(self) -> Job:
        """Finish early, saving the LoRA from the current weights (``succeeded``)."""
        self.data = self._http.json("POST", f"/v1/jobs/{self.id}/stop")
        return self

    def update(self, *, priority: str | None = None, held: bool | None = None) -> Job:
        """A queued job's tier (``low``, ``normal``; admins: ``high``) and hold; the server
        answers 409 once it runs."""
        body: dict[str, Any] = {}
        if priority is not None:
            body["priority"] = priority
        if held is not None:
            body["held"] = held
        self.data = self._http.json("PATCH", f"/v1/jobs/{self.id}", json=body)
        return self

    def hold(self) -> Job:
        """Keep a queued job waiting until ``release``."""
        return self.update(held=True)

    def release(self) -> Job:
        return self.update(held=False)

    def artifacts(self) -> list[dict[str, Any]]:
        """The job's files: ``{name, kind, size_bytes, sha256, ...}`` each."""
        listing = self._http.json("GET", f"/v1/jobs/{self.id}/artifacts")
        return list(listing["items"])

    def logs(self, *, follow: bool = False, interval_s: float = 2.0) -> Iterator[str]:
        """The job's log, in chunks; ``follow``: until the job ends and the log is read."""
        offset = 0
        while True:
            chunk = self._http.json("GET", f"/v1/jobs/{self.id}/logs", params={"offset": offset})
            if chunk["text"]:
                yield chunk["text"]
            offset = chunk["next_offset"]
            if not follow or (chunk.get("finished") and not chunk["text"]):
                return
            if not chunk["text"]:
                self._sleep(interval_s)

    def events(self, *, last_event_id: int | None = None) -> Iterator[Event]:
        """The job's events from its first (or after ``last_event_id``) until ``finished``,
        reconnecting with ``Last-Event-ID`` when the connection drops."""
        self._last_event_id = last_event_id
        for item in self._follow():
            if isinstance(item, Event):
                yield item

    def _follow(self, backoff_s: float = 0.5) -> Iterator[Event | Keepalive]:
        failures = 0
        while True:
            received, dropped = False, None
            try:
                for item in self._stream_once():
                    received = received or isinstance(item, Event)
                    yield item
                    if isinstance(item, Event) and item.type == "finished":
                        return
            except (ConnectionFailed, ServerError) as exc:
                # A dropped line, a server restarting, a proxy timing out: resume from the
                # last event received, even if the job has ended meanwhile (the rest of its
                # events, `finished` included, are still to come).
                dropped = exc
            # A few connections in a row that bring nothing: something between us and the
            # server won't carry the stream.
            failures = 0 if received else failures + 1
            if failures >= MAX_STREAM_FAILURES:
                reason = dropped or "it ends before any event"
                raise StreamUnavailable(f"the event stream keeps failing: {reason}")
            # Ended cleanly without `finished`: the server has nothing more to send for a job
            # that ended (one from before `finished` events existed, say).
            if dropped is None and self.refresh().finished:
                return
            self._sleep(min(backoff_s * 2**failures, 10.0))

    def _stream_once(self) -> Iterator[Event | Keepalive]:
        after = self._last_event_id
        headers = {"Last-Event-ID": str(after)} if after is not None else {}
        path = f"/v1/jobs/{self.id}/events"
        try:
            with self._http.stream("GET", path, headers=headers, timeout=STREAM_TIMEOUT) as answer:
                kind = answer.headers.get("content-type", "")
                if not kind.startswith("text/event-stream"):
                    raise StreamUnavailable(f"{path} answered {kind or 'no content type'}")
                for item in parse(answer.iter_lines()):
                    if isinstance(item, Event) and item.id is not None:
                        self._last_event_id = item.id
                    yield item
        except ApiError as exc:
            if isinstance(exc, ServerError | NotFound) or exc.status == 401:
                raise  # retried, the job is gone, or the token: not the stream's fault
            raise StreamUnavailable(f"{path}: {exc}") from exc

    def wait(
        self,
        *,
        progress: bool | TextIO = False,
        interval_s: float = 2.0,
        timeout_s: float | None = None,
        stream: bool = True,
        on_event: Callable[[Event], None] | None = None,
    ) -> Job:
        """Until the job ends; returns it, ended (check ``status`` and ``error``).

        A running job is followed on its event stream (``on_event`` sees each event),
        reconnecting with ``Last-Event-ID``; a queued one, and any job whose stream can't be
        followed, is polled every ``interval_s``. ``progress``: a live line on stderr (or
        on the stream given). ``timeout_s``: TimeoutError if it has not ended by then
        (checked between events, which a live stream brings at least every 15 s)."""
        out = progress if not isinstance(progress, bool) else sys.stderr
        watch = _Watch(self, ProgressBar(out) if progress else None, on_event, timeout_s)
        try:
            self.refresh()
            watch.show()
            while not self.finished:
                watch.check_deadline()
                if stream and self.status == "running":
                    try:
                        watch.follow_stream()
                    except StreamUnavailable:
                        stream = False  # polling from now on
                    continue
                self._sleep(interval_s)
                self.refresh()
                watch.show()
        finally:
            watch.close()
        return self

    def apply(self, event: Event) -> None:
        """Folds a stream event into ``data``, as the next ``refresh`` would show it."""
        if not isinstance(event.data, dict):
            return
        progress = self.data.setdefault("progress", {}) or {}
        if event.type == "progress":
            self.data["progress"] = dict(event.data)
            self.data["status"] = "running"
        elif event.type == "phase":
            progress.update(event.data)
            if "start_step" in event.data:  # training started: from step 0, or a resumed one
                progress["step"] = event.data["start_step"]
            self.data["progress"] = progress
        elif event.type == "finished" and event.data.get("status") in TERMINAL:
            self.data["status"] = event.data["status"]

    def download(
        self,
        directory: str | os.PathLike[str] = ".",
        *,
        all_artifacts: bool = False,
        force: bool = False,
    ) -> list[Path]:
        """Downloads the LoRA (``all_artifacts``: samples, checkpoints, states too) into
        ``directory``; returns the paths written.

        Never overwrites a file unless ``force``: TargetExists (a FileExistsError) names
        every file that exists before anything is downloaded. Each file lands whole or not
        at all, checked against the server's SHA-256."""
        items = self.artifacts()
        wanted = items if all_artifacts else [a for a in items if a["kind"] == "lora"]
        if not wanted:
            what = "artifacts" if all_artifacts else "LoRA"
            raise NothingToDownload(self._nothing_to_download(what))
        folder = Path(directory)
        targets = [(a["name"], _target(folder, a["name"])) for a in wanted]
        existing = [target for _, target in targets if os.path.lexists(target)]
        if existing and not force:
            raise TargetExists(existing)
        written = []
        for name, target in targets:
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                self._http.download(f"/v1/jobs/{self.id}/artifacts/{name}", target, overwrite=force)
            except FileExistsError:  # appeared while we downloaded
                raise TargetExists([target]) from None
            written.append(target)
        return written

    def _nothing_to_download(self, what: str) -> str:
        """Why a job lists no ``what`` (LoRA, artifacts): not yet, or never will."""
        status = self.refresh().status
        if status == "cancelled":
            return f"job {self.id} was cancelled: it has no {what}"
        if status == "failed":
            code = (self.error or {}).get("code") or "no error code"
            return f"job {self.id} failed ({code}): it has no {what}"
        if status == "succeeded":
            return f"job {self.id} succeeded but lists no {what}"
        return f"job {self.id} has no {what} yet (it is {status})"


class _Watch:
    """``Job.wait``'s display and deadline, and its following of the event stream."""

    def __init__(
        self,
        job: Job,
        bar: ProgressBar | None,
        on_event: Callable[[Event], None] | None,
        timeout_s: float | None,
    ) -> None:
        self.job, self.bar, self.on_event = job, bar, on_event
        self.deadline = None if timeout_s is None else time.monotonic() + timeout_s

    def show(self) -> None:
        if self.bar is not None:
            self.bar.show(self.job.data)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

    def check_deadline(self) -> None:
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise TimeoutError(f"job {self.job.id} is still {self.job.status}")

    def follow_stream(self) -> None:
        """Until the stream says ``finished``, or the job is handed back to the queue (a
        worker stopped: seen at a keepalive). Leaves the job freshly read."""
        for item in self.job._follow():
            self.check_deadline()
            if isinstance(item, Keepalive):
                self.job.refresh()
                self.show()
                if self.job.status != "running":
                    break
                continue
            self.job.apply(item)
            if self.on_event is not None:
                self.on_event(item)
            self.show()
        self.job.refresh()
        self.show()
