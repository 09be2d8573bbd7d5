"""TensorBoard: the worker writes the loss scalars during training and offers the file."""

from __future__ import annotations

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from trainer.hooks import ArtifactSaved, EpochCompleted, Notice, StepCompleted
from worker.tensorboard import TensorBoardReporter


def _scalars(path) -> dict[str, list[tuple[int, float]]]:
    accumulator = EventAccumulator(str(path))
    accumulator.Reload()
    return {
        tag: [(e.step, e.value) for e in accumulator.Scalars(tag)]
        for tag in accumulator.Tags()["scalars"]
    }


def test_the_reporter_writes_step_and_epoch_scalars_and_publishes_the_file(tmp_path):
    board = TensorBoardReporter(tmp_path)
    for step in (1, 2, 3):
        board(StepCompleted(step=step, total_steps=3, epoch=1, total_epochs=1, loss=1.0 / step,
                            avg_loss=0.5, lr={"unet": 1e-4, "textencoder": 5e-5},
                            samples_per_s=2.0, s_per_step=0.5))  # fmt: skip
    board(EpochCompleted(epoch=1, avg_loss=0.6))
    board(Notice("ignored"))
    published: list[ArtifactSaved] = []
    board.close(published.append)
    [artifact] = published
    assert artifact.kind == "tensorboard" and artifact.path.startswith("tensorboard/")
    scalars = _scalars(tmp_path / artifact.path)
    assert [s for s, _ in scalars["loss/current"]] == [1, 2, 3]
    assert scalars["loss/current"][1][1] == pytest.approx(0.5)
    assert scalars["lr/textencoder"][0][1] == pytest.approx(5e-5)
    assert scalars["loss/epoch"] == [(1, pytest.approx(0.6))]


def test_a_run_without_steps_publishes_nothing(tmp_path):
    board = TensorBoardReporter(tmp_path)
    published: list[ArtifactSaved] = []
    board.close(published.append)
    assert published == [] and not (tmp_path / "tensorboard").exists()


@pytest.mark.slow
def test_a_finished_job_offers_its_event_file_with_every_steps_loss(watch_stack, watched, tmp_path):
    job_id = watched.job["id"]
    items = watch_stack.get(f"/v1/jobs/{job_id}/artifacts").json()["items"]
    [board] = [a for a in items if a["kind"] == "tensorboard"]
    content = watch_stack.get(f"/v1/jobs/{job_id}/artifacts/{board['name']}").content
    path = tmp_path / "events.out.tfevents.job"
    path.write_bytes(content)
    scalars = _scalars(path)
    total = watched.job["plan"]["total_steps"]
    assert [step for step, _ in scalars["loss/current"]] == list(range(1, total + 1))
    metrics = watch_stack.get(f"/v1/jobs/{job_id}/metrics").json()["points"]
    assert [round(v, 5) for _, v in scalars["loss/current"]] == [
        round(p["loss"], 5) for p in metrics
    ]
