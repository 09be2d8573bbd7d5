"""The plan made at submit is the one the trainer runs, unless the dataset changed since."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from tests.factories import make_dataset, tiny_payload
from trainer.config import parse_payload
from trainer.data.folders import scan_dataset
from trainer.hooks import Event, Notice
from trainer.job import TrainingJob
from trainer.plan import TrainingPlan, plan_training, reuse_or_plan
from trainer.run import train

CONFIG = parse_payload(tiny_payload()).config


def test_a_stored_plan_reads_back_equal(tmp_path: Path) -> None:
    data = make_dataset(tmp_path / "data", {"2_toy": 3, "1_extra": 1})
    plan = plan_training(CONFIG, data)
    assert plan.dataset_fingerprint
    assert TrainingPlan.from_dict(plan.to_dict()) == plan


def test_an_unchanged_dataset_keeps_the_stored_plan(tmp_path: Path) -> None:
    data = make_dataset(tmp_path / "data", {"2_toy": 3})
    stored = plan_training(CONFIG, data)
    plan, notice = reuse_or_plan(stored, CONFIG, scan_dataset(data, CONFIG.caption_extension))
    assert plan is stored and notice is None


def test_a_changed_caption_or_a_new_image_plans_again(tmp_path: Path) -> None:
    data = make_dataset(tmp_path / "data", {"2_toy": 3})
    stored = plan_training(CONFIG, data)
    caption = next((data / "2_toy").glob("*.txt"))
    caption.write_text("a different caption, longer than before")
    plan, notice = reuse_or_plan(stored, CONFIG, scan_dataset(data, CONFIG.caption_extension))
    assert plan is not stored and plan.dataset_fingerprint != stored.dataset_fingerprint
    assert notice is not None and "dataset changed" in notice.message

    make_dataset(data, {"3_more": 2})  # a new folder: more steps
    plan, notice = reuse_or_plan(plan, CONFIG, scan_dataset(data, CONFIG.caption_extension))
    assert plan.images_x_repeats == 3 * 2 + 2 * 3 and notice is not None


def test_a_plan_stored_before_fingerprints_is_planned_afresh(tmp_path: Path) -> None:
    data = make_dataset(tmp_path / "data", {"2_toy": 3})
    old = replace(plan_training(CONFIG, data), dataset_fingerprint="", total_steps=1)
    plan, notice = reuse_or_plan(old, CONFIG, scan_dataset(data, CONFIG.caption_extension))
    assert plan.total_steps != 1 and notice is None


def test_the_trainer_runs_the_stored_plan_while_the_dataset_is_unchanged(
    tiny_model: Path, tmp_path: Path
) -> None:
    data = make_dataset(tmp_path / "data", {"1_toy": 2})
    config = CONFIG.model_copy(update={"epochs": 4})
    stored = plan_training(config, data)
    assert stored.total_steps > 1
    # A stored plan of one step: the trainer must run it, not a plan of its own.
    one_step = replace(stored, total_steps=1, epochs=1)
    events: list[Event] = []
    result = train(TrainingJob(config, tiny_model, data, tmp_path / "out", plan=one_step),
                   reporter=events.append)  # fmt: skip
    assert result.steps == 1
    assert not [e for e in events if isinstance(e, Notice) and "dataset changed" in e.message]
