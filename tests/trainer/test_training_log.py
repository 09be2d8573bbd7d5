"""The training log (trainer/report/training_log.py) from a run's events, and the filter
that keeps the ML stack's known-harmless notices out of it (trainer/report/quiet.py)."""

from __future__ import annotations

import io
import logging
import re
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.factories import tiny_payload
from trainer.config import parse_payload
from trainer.hooks import (
    ArtifactSaved,
    EpochCompleted,
    Notice,
    PhaseChanged,
    StepCompleted,
    TrainingStarted,
)
from trainer.job import TrainingJob
from trainer.plan import BucketCount, TrainingPlan
from trainer.report.quiet import KnownNoise, quiet_logging
from trainer.report.training_log import TrainingLog

TOTAL = 45


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def captured() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    stream = io.StringIO()
    logger = logging.getLogger("test-training-log")
    handler = logging.StreamHandler(stream)
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    yield logger, stream
    logger.removeHandler(handler)


def _job(tmp_path: Path) -> TrainingJob:
    config = parse_payload(tiny_payload(output_name="cats")).config
    plan = TrainingPlan(
        TOTAL, 15, 3, 0, 30, (BucketCount((64, 64), 20), BucketCount((96, 64), 10)), ()
    )
    return TrainingJob(config, tmp_path / "base.safetensors", tmp_path, tmp_path, plan=plan)


def _step(step: int, s_per_step: float = 0.5) -> StepCompleted:
    return StepCompleted(step, TOTAL, (step - 1) // 15 + 1, 3, 0.1 + step / 1000, 0.12,
                         {"unet": 1e-4}, 4.0, s_per_step)  # fmt: skip


def test_a_run_logs_its_plan_steps_at_an_interval_saves_warnings_and_summary(tmp_path, captured):
    logger, stream = captured
    clock = Clock()
    (tmp_path / "cats.safetensors").write_bytes(b"x" * 2_000_000)
    noise = KnownNoise()
    noise.hidden["something harmless"] = 3
    log = TrainingLog(_job(tmp_path), noise, logger, clock=clock)
    log.begin()
    for event in (PhaseChanged("loading"), PhaseChanged("caching"),
                  TrainingStarted(TOTAL, 3, 15), PhaseChanged("training")):  # fmt: skip
        log(event)
    for step in range(1, TOTAL + 1):
        clock.now += 0.5 if step != 33 else 30  # one slow step: logged on time, not count
        log(_step(step))
        if step == 15:
            log(EpochCompleted(1, 0.125))
            log(Notice("fp16 needs a CUDA GPU", "mixed_precision"))
    log(ArtifactSaved("cats.safetensors", "lora", epoch=3, step=TOTAL))
    log.finished(TOTAL, 3, False, tmp_path / "cats.safetensors")
    lines = stream.getvalue().splitlines()
    text = "\n".join(lines)
    assert "files named cats*.safetensors" in lines[0]
    assert "plan: 45 steps over 3 epochs, 15 batches of 2 per epoch" in text
    assert "plan: 30 images x repeats in 2 bucket(s) (64x64: 20, 96x64: 10)" in text
    line = r"^step (\d+)/45 epoch \d/3 loss 0\.\d{4} avg 0\.1200 lr unet 1\.00e-04 \| 0\.50 s/step"
    logged = [int(m) for m in re.findall(line, text, re.M)]
    assert logged == [1, 11, 21, 31, 33, 43, 45]  # first, every 10, the slow one, last
    assert "epoch 1/3 done: avg loss 0.1250" in text
    assert "mixed_precision: fp16 needs a CUDA GPU" in text
    assert "saved lora: cats.safetensors (epoch 3, step 45), 2.0 MB" in text
    assert "hid 3 known-harmless library message(s): something harmless x3" in text
    assert re.search(r"^done: 45 steps, 3 epochs in 0:00:5\d .*LoRA cats\.safetensors; "
                     r"files: 1 lora; 1 warning", lines[-1])  # fmt: skip
    assert text.count("phase: training") == 1


def test_a_failed_run_says_where_it_stopped_and_why(tmp_path, captured):
    logger, stream = captured
    log = TrainingLog(_job(tmp_path), None, logger, clock=Clock())
    log(TrainingStarted(TOTAL, 3, 15))
    log(_step(7))
    log.ended("failed", "cuda_oom: CUDA out of memory")
    assert (
        stream.getvalue()
        .splitlines()[-1]
        .startswith("failed at step 7/45 after 0:00:00: cuda_oom: CUDA out of memory")
    )


@pytest.fixture
def quiet() -> Iterator[tuple[KnownNoise, io.StringIO]]:
    """quiet_logging into a buffer; the process's logging and library settings restored."""
    import diffusers.utils.logging as diffusers_logging
    import transformers.utils.logging as transformers_logging

    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    stream = io.StringIO()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            yield quiet_logging(stream), stream
    finally:
        logging.captureWarnings(False)
        root.handlers[:], root.level = saved
        for library in (diffusers_logging, transformers_logging):
            library.enable_default_handler()
            library.disable_propagation()
            library.enable_progress_bar()


def test_only_the_known_harmless_notices_are_hidden_and_they_are_counted(quiet):
    import diffusers.utils.logging as diffusers_logging
    import transformers.utils.logging as transformers_logging

    noise, stream = quiet
    # The exact calls the libraries make (see the sources cited in trainer/report/quiet.py).
    transformers_logging.get_logger("transformers.utils.import_utils").warning(
        "`CLIPImageProcessor` requires torchvision (not installed); falling back to "
        "`CLIPImageProcessorPil` for backward compatibility."
    )
    modeling = diffusers_logging.get_logger("diffusers.models.modeling_utils")
    modeling.warning(
        "There are modules in UNet2DConditionModel that should be kept in float32: []. "
        "Casting directly with `to()` can lead to inconsistent results"
    )
    modeling.warning(
        "There are modules in AutoencoderKL that should be kept in float32: ['x']. Casting"
    )
    logging.getLogger("bitsandbytes.backends.cpu.ops").warning(
        "Failed to load CPU gemm_4bit_forward from kernels-community: %s. Please make sure",
        ImportError("kernels"),
    )
    logging.getLogger("bitsandbytes.cextension").warning("a real bitsandbytes problem")
    warnings.warn("`gradient_checkpointing_enable` is deprecated and will be removed in v6.",
                  FutureWarning, stacklevel=1)  # fmt: skip
    warnings.warn("some other deprecation", FutureWarning, stacklevel=1)
    for _ in diffusers_logging.tqdm(range(3), desc="Loading pipeline components..."):
        pass
    shown = stream.getvalue()
    assert "['x']" in shown and "a real bitsandbytes problem" in shown
    assert "some other deprecation" in shown
    for hidden in ("torchvision", "float32: []", "kernels-community", "gradient_checkpointing",
                   "Loading pipeline components"):  # fmt: skip
        assert hidden not in shown
    assert sum(noise.hidden.values()) == 4
    assert "hid 4 known-harmless library message(s)" in (noise.summary() or "")
