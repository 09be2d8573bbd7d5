"""A real job's train.log is the training's own log, and its files carry the job's name
(issue 15, items 3, 4 and 9), read from the shared watched job (tests/watched_job.py):
3 epochs x 2 steps, submitted as "watched" with the seed's ``output_name: "..."``."""

from __future__ import annotations

import re

import pytest

pytestmark = pytest.mark.slow

# What the ML stack printed into train.log and onto `lorabox up`'s console before
# (trainer/report/quiet.py hides them).
NOISE = ("Loading pipeline components", "should be kept in float32: []", "FutureWarning",
         "requires torchvision", "kernels-community", "it/s]")  # fmt: skip
LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d (INFO|WARNING|ERROR) +[\w.]+: ")


def test_the_log_has_the_plan_steps_saves_and_summary_and_no_library_noise(watch_stack, watched):
    assert watched.job["status"] == "succeeded", watched.stderr
    text = watch_stack.get(f"/v1/jobs/{watched.job['id']}/logs").json()["text"]
    lines = text.splitlines()
    assert lines and all(LINE.match(line) for line in lines), text  # timestamped, ours
    assert "phase: loading" in text and "phase: training" in text
    assert "plan: 6 steps over 3 epochs, 2 batches of 1 per epoch" in text
    assert "plan: 2 images x repeats in 1 bucket(s) (64x64: 2)" in text
    step_line = r"step (\d)/6 epoch \d/3 loss \d+\.\d{4} avg \d+\.\d{4} lr \w+ \d\.\d\de-\d\d"
    steps = re.findall(step_line, text)
    assert steps[0] == "1" and steps[-1] == "6"
    assert "saved checkpoint: watched-000001.safetensors (epoch 1, step 2)" in text
    assert "saved lora: watched.safetensors (epoch 3, step 6)" in text
    assert re.search(r"done: 6 steps, 3 epochs in \d:\d\d:\d\d .*LoRA watched\.safetensors", text)
    for noise in NOISE:
        assert noise not in text


def test_a_named_jobs_files_carry_its_name(watch_stack, watched):
    kinds = {a["name"]: a["kind"] for a in watch_stack.artifacts(watched.job["id"])}
    assert kinds["watched.safetensors"] == "lora"
    assert (
        kinds["watched-000001.safetensors"] == kinds["watched-000002.safetensors"] == "checkpoint"
    )
    assert not any(name.startswith("last") for name in kinds)


def test_the_worker_console_shows_no_known_library_noise(watch_stack, watched):
    # `lorabox up` prints its worker's output, fork server's included; this is that worker.
    worker_log = watch_stack.logs[1].read_text(errors="replace")
    for noise in NOISE:
        assert noise not in worker_log, noise
