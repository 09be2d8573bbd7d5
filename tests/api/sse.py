"""A small text/event-stream reader for the tests (what a browser's EventSource does)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Received:
    id: int
    type: str
    data: dict[str, Any]


def parse(lines: Iterable[str]) -> list[Received]:
    events: list[Received] = []
    fields: dict[str, str] = {}
    for line in lines:
        line = line.rstrip("\r")
        if not line:
            if "data" in fields:
                events.append(
                    Received(
                        int(fields["id"]),
                        fields.get("event", "message"),
                        json.loads(fields["data"]),
                    )
                )
            fields = {}
        elif not line.startswith(":"):
            name, _, value = line.partition(":")
            fields[name] = value[1:] if value.startswith(" ") else value
    return events
