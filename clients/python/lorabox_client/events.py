"""A job's Server-Sent Events (``GET /v1/jobs/{id}/events``), parsed.

The stream's event types are ``progress`` (the job's progress fields), ``phase``,
``artifact``, ``sample`` and ``finished``, after which the server ends the stream. Each
event's id is its place in the job's event log, so a client that reconnects with
``Last-Event-ID: k`` receives k+1 onward, no gap and no repeat (``api/routes/stream.py``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

STREAM_TYPES = ("progress", "phase", "artifact", "sample", "finished")


@dataclass(frozen=True)
class Event:
    id: int | None
    type: str
    data: Any


class Keepalive:
    """The server's ping (an SSE comment, every 15 s): nothing happened, the line is alive."""


KEEPALIVE = Keepalive()


def _value(line: str) -> tuple[str, str]:
    name, _, value = line.partition(":")
    return name, value[1:] if value.startswith(" ") else value


def parse(lines: Iterable[str]) -> Iterator[Event | Keepalive]:
    """Events as the SSE format defines them (the WHATWG HTML standard's "Server-sent
    events" section): fields until a blank line; ``data`` lines joined; comments are
    keepalives. Data is JSON here; anything else is kept as text."""
    event_type, event_id = "message", None
    data: list[str] = []
    for line in lines:
        if not line:
            if data:
                text = "\n".join(data)
                try:
                    payload: Any = json.loads(text)
                except ValueError:
                    payload = text
                yield Event(event_id, event_type, payload)
            event_type, data, event_id = "message", [], None
            continue
        if line.startswith(":"):
            yield KEEPALIVE
            continue
        name, value = _value(line)
        if name == "event":
            event_type = value
        elif name == "data":
            data.append(value)
        elif name == "id" and value.isdigit():
            event_id = int(value)
