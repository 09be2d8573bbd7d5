"""One dispatch for the trainer's events: every event class reaches its own handler method."""

from __future__ import annotations

import re
from typing import Any, get_args

import pytest

from trainer.hooks import Event, EventHandler, Notice, StepCompleted

EVENT_CLASSES = get_args(Event)


def method_name(cls: type) -> str:
    """``StepCompleted`` -> ``on_step_completed``: the convention the handler follows."""
    return "on_" + re.sub(r"(?<!^)(?=[A-Z])", "_", cls.__name__).lower()


def recording_handler() -> tuple[EventHandler, list[tuple[str, Any]]]:
    """A handler overriding every ``on_*`` method to record which one was called."""
    calls: list[tuple[str, Any]] = []

    def recorder(name: str) -> Any:
        return lambda self, event: calls.append((name, event))

    names = [name for name in dir(EventHandler) if name.startswith("on_")]
    handler_class = type("Recording", (EventHandler,), {name: recorder(name) for name in names})
    return handler_class(), calls


@pytest.mark.parametrize("cls", EVENT_CLASSES, ids=lambda cls: cls.__name__)
def test_every_event_class_is_dispatched_to_its_own_method(cls):
    handler, calls = recording_handler()
    event = cls.__new__(cls)  # dispatch reads only the type; no field values needed
    handler(event)
    assert calls == [(method_name(cls), event)]


def test_the_handler_has_no_method_for_an_event_outside_the_union():
    methods = {name for name in dir(EventHandler) if name.startswith("on_")}
    assert methods == {method_name(cls) for cls in EVENT_CLASSES}


def test_the_base_handler_ignores_every_event_and_refuses_a_foreign_one():
    handler = EventHandler()
    handler(Notice("ignored"))
    handler.dispatch(StepCompleted(1, 1, 1, 1, 0.1, 0.1, {}, 1.0, 1.0))
    with pytest.raises(TypeError, match="no handler method for str"):
        handler("not an event")  # type: ignore[arg-type]
