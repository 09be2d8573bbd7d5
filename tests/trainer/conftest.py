"""Shared fixtures: one miniature SDXL and one trained run for tests that only read it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.factories import make_dataset, tiny_payload
from tests.trainer.effects import coverage_problems
from trainer.config import parse_payload
from trainer.hooks import Event
from trainer.models.tiny import tiny_configs, write_config_folder, write_tiny_sdxl
from trainer.run import TrainingJob, TrainingResult, train


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_sdxl(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="session")
def tiny_config_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The miniature SDXL's diffusers configs alone (no weights): what the memory model and
    the traces build from."""
    folder = tmp_path_factory.mktemp("tiny-sdxl-configs")
    write_config_folder(folder, tiny_configs())
    return folder


@pytest.fixture(scope="session")
def toy_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("dataset"), {"2_toy": 4, "1_extra": 2})


@dataclass
class TrainedRun:
    job: TrainingJob
    result: TrainingResult
    events: list[Event]


@pytest.fixture(scope="session")
def trained_run(tiny_model: Path, toy_dataset: Path, tmp_path_factory) -> TrainedRun:
    """The scaled-down seed payload trained once on the miniature SDXL."""
    config = parse_payload(tiny_payload()).config
    job = TrainingJob(config, tiny_model, toy_dataset, tmp_path_factory.mktemp("out"))
    events: list[Event] = []
    result = train(job, reporter=events.append)
    return TrainedRun(job, result, events)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "shows_effect(*keys): the test shows a non-default value's effect"
    )


def pytest_collection_modifyitems(
    session: pytest.Session, config: pytest.Config, items: list[pytest.Item]
) -> None:
    """Collection fails while an honoured key has no test showing its effect."""
    problems = coverage_problems(Path(__file__).parent)
    if problems:
        raise pytest.UsageError("effect-test coverage:\n  " + "\n  ".join(problems))
