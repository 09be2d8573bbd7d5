"""`lorabox submit --wait` against the real service: its exit code is the job's outcome."""

from __future__ import annotations

import time

import pytest

pytestmark = pytest.mark.slow


def test_wait_exits_0_when_the_job_succeeds_and_prints_its_id_and_progress(watched):
    assert watched.returncode == 0, watched.stderr
    assert watched.stdout.strip() == watched.job["id"]
    assert watched.job["status"] == "succeeded"
    assert "succeeded" in watched.stderr and "loss" in watched.stderr  # the progress lines


def test_wait_exits_1_when_the_job_fails(watch_stack, toy_dataset_dir, write_payload):
    done = watch_stack.cli(
        "submit", str(write_payload()), "--dataset", str(toy_dataset_dir),
        "--model", "corrupt-sdxl", "--wait", "--interval", "0.3",
    )  # fmt: skip
    assert done.returncode == 1, (done.stderr, watch_stack.log_tail())
    job = watch_stack.job(done.stdout.strip())
    assert job["status"] == "failed" and job["error"]["code"] in done.stderr


def test_wait_exits_2_when_the_job_is_cancelled(
    watch_stack, watched, toy_dataset_dir, write_payload
):
    admin = watch_stack.as_("admin")
    assert watch_stack.client.post("/v1/queue/pause", headers=admin).status_code == 200
    try:
        waiting = watch_stack.cli_background(
            "submit", str(write_payload()), "--dataset", str(toy_dataset_dir),
            "--model", "tiny-sdxl", "--wait", "--interval", "0.3",
        )  # fmt: skip
        assert waiting.stdout is not None
        job_id = waiting.stdout.readline().strip()  # printed as soon as the job is queued
        time.sleep(0.5)
        cancelled = watch_stack.client.post(f"/v1/jobs/{job_id}/cancel", headers=watch_stack.as_())
        assert cancelled.json()["status"] == "cancelled"
        assert waiting.wait(timeout=60) == 2, waiting.stderr.read() if waiting.stderr else ""
    finally:
        watch_stack.client.post("/v1/queue/resume", headers=admin)


@pytest.mark.parametrize(
    ("model", "user_token", "reason"),
    [("no-such-model", None, "base_model"), ("tiny-sdxl", "not-a-token", "HTTP 401")],
)
def test_wait_exits_3_on_a_client_or_server_error(
    watch_stack, toy_dataset_dir, write_payload, model, user_token, reason
):
    if user_token:
        watch_stack.tokens["intruder"] = user_token
    done = watch_stack.cli(
        "submit", str(write_payload()), "--dataset", str(toy_dataset_dir), "--model", model,
        "--wait", user="intruder" if user_token else "alice",
    )  # fmt: skip
    assert done.returncode == 3 and reason in done.stderr, done.stderr
    assert done.stdout == ""


def test_an_unreachable_server_exits_3(watch_stack, tmp_path):
    watch_stack_url, watch_stack.url = watch_stack.url, "http://127.0.0.1:9"
    try:
        done = watch_stack.cli("jobs")
    finally:
        watch_stack.url = watch_stack_url
    assert done.returncode == 3 and "cannot reach the server" in done.stderr
