"""The stop signal during setup (``trainer.hooks.StopRequest``): polled at the start, after the
dataset scan, after loading, after building the network, after each latent-caching batch and
after caching, so nothing waits for minutes of setup before the first step."""

from __future__ import annotations

from pathlib import Path

import pytest
from safetensors.torch import load_file

from tests.factories import tiny_payload
from trainer.config import parse_payload
from trainer.errors import TrainingCancelled, TrainingSuspended
from trainer.hooks import (
    Event,
    PhaseChanged,
    StepCompleted,
    StopRequest,
    StopSignal,
    TrainingStarted,
)
from trainer.run import TrainingJob, train


class _Started(Exception):
    pass


def _job(model: Path, data: Path, out: Path) -> TrainingJob:
    config = parse_payload(tiny_payload(save_every_n_epochs=0, vae_batch_size=2)).config
    return TrainingJob(config, model, data, out)


def _stop_from(call: int, request: StopRequest, calls: list[int]) -> StopSignal:
    """Answers ``request`` from the ``call``-th poll on; ``calls`` counts the polls."""

    def stop() -> StopRequest | None:
        calls.append(len(calls) + 1)
        return request if len(calls) >= call else None

    return stop


def _phases(events: list[Event]) -> list[str]:
    return [e.phase for e in events if isinstance(e, PhaseChanged)]


def test_an_abort_at_any_setup_poll_cancels_the_run_before_its_first_step(
    tiny_model: Path, toy_dataset: Path, tmp_path: Path
) -> None:
    # At the start, after the scan, the load and the network; after each caching batch; after.
    polls = _count_polls(tiny_model, toy_dataset, tmp_path / "polls")
    assert polls >= 4 + 2 + 1  # a few caching batches

    for call in (1, 3, 5, polls):  # at the start, after the load, in caching, after it
        out, events, calls = tmp_path / f"abort-{call}", [], []
        with pytest.raises(TrainingCancelled):
            train(
                _job(tiny_model, toy_dataset, out), events.append, _stop_from(call, "abort", calls)
            )
        assert len(calls) == call  # it ended at the poll that saw the abort
        assert not [e for e in events if isinstance(e, TrainingStarted | StepCompleted)]
        assert ("caching" in _phases(events)) == (call >= 5)
        assert not list(out.glob("*.safetensors"))


def _count_polls(model: Path, data: Path, out: Path) -> int:
    calls: list[int] = []

    def stop() -> StopRequest | None:
        calls.append(len(calls) + 1)
        return None

    def until_started(event: Event) -> None:
        if isinstance(event, TrainingStarted):
            raise _Started

    with pytest.raises(_Started):
        train(_job(model, data, out), until_started, stop)
    return len(calls)


def test_a_suspend_during_setup_ends_at_once_with_no_new_state(
    tiny_model: Path, toy_dataset: Path, tmp_path: Path
) -> None:
    events: list[Event] = []
    calls: list[int] = []
    with pytest.raises(TrainingSuspended) as suspended:
        train(
            _job(tiny_model, toy_dataset, tmp_path), events.append, _stop_from(5, "suspend", calls)
        )
    assert (suspended.value.state, suspended.value.step, len(calls)) == (None, 0, 5)
    assert not list(tmp_path.glob("*.safetensors"))


def test_a_finish_before_the_first_step_skips_caching_and_saves_the_untrained_lora(
    tiny_model: Path, toy_dataset: Path, tmp_path: Path
) -> None:
    events: list[Event] = []
    result = train(
        _job(tiny_model, toy_dataset, tmp_path / "early"), events.append, lambda: "finish"
    )
    assert (result.steps, result.stopped_early) == (0, True)
    assert _phases(events) == ["loading", "training", "saving"]  # nothing cached
    assert load_file(str(result.lora_path))

    events, calls = [], []
    cut = train(  # asked after the first caching batch: caching stops there
        _job(tiny_model, toy_dataset, tmp_path / "caching"), events.append,
        _stop_from(5, "finish", calls),
    )  # fmt: skip
    assert (cut.steps, cut.stopped_early) == (0, True)
    assert len(calls) == 7  # the cut batch's, after caching, the loop's first: no other batch
    assert _phases(events) == ["loading", "caching", "training", "saving"]
    assert not [e for e in events if isinstance(e, StepCompleted)]
    assert load_file(str(cut.lora_path)).keys() == load_file(str(result.lora_path)).keys()
