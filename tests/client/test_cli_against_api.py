"""`lorabox jobs` and `lorabox download` through the real entry point, against a real API
process (no worker: the jobs are rows written as a worker would leave them, so nothing
trains)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from core.db import Database, Job, User
from core.jobs.artifacts import job_dir, register_artifact
from core.settings import Settings
from tests.watched_job import PLAN, WatchStack, insert_job
from tests.worker.conftest import prepare, served

LORA = b"not really a LoRA, but bytes the API serves"
# Long names make bob's listing (~140 KB) more than a pipe holds, so `| head` closes it while
# lorabox still writes, whatever the timing.
BULK_JOBS, BULK_NAME = 600, "x" * 200


def _bulk_insert(settings: Settings, owner: str, count: int) -> None:
    db = Database(settings.database_url, pool_size=1)
    with db.writing() as session:
        user = session.query(User).filter_by(name=owner).one()
        session.add_all(
            Job(
                owner_id=user.id,
                name=f"{BULK_NAME}{i}",
                status="succeeded",
                base_model="m",
                dataset_id="d",
                params={},
                config={},
                resolved={},
                plan=PLAN,
            )  # fmt: skip
            for i in range(count)
        )
    db.dispose()


def _with_lora(settings: Settings, job_id: str) -> None:
    folder = job_dir(settings, job_id)
    folder.mkdir(parents=True)
    (folder / "last.safetensors").write_bytes(LORA)
    db = Database(settings.database_url, pool_size=1)
    with db.writing() as session:
        register_artifact(session, settings, job_id=job_id, name="last.safetensors", kind="lora")
    db.dispose()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[WatchStack, dict[str, str]]]:
    """The API, and alice's jobs by what they are: one in each state that matters here."""
    home = tmp_path_factory.mktemp("cli-home")
    settings = Settings(home=home, models_dir=home / "models")
    tokens = prepare(settings)
    jobs = {
        "done": insert_job(settings, status="succeeded", name="done"),
        "cancelled": insert_job(settings, status="cancelled"),
        "failed": insert_job(
            settings,
            status="failed",
            error_code="nan_loss",
            error_message="the loss became NaN at step 3",
        ),  # fmt: skip
        "running": insert_job(
            settings, status="running", name="busy", progress={"step": 3, "total_steps": 4}
        ),  # fmt: skip
    }
    _with_lora(settings, jobs["done"])
    _bulk_insert(settings, "bob", BULK_JOBS)
    with served(settings, worker=False) as (client, logs):
        url = str(client.base_url).rstrip("/")
        yield WatchStack(client, settings, tokens, logs, url=url), jobs


def test_jobs_prints_a_header_row_aligned_with_its_columns(stack):
    api, jobs = stack
    done = api.cli("jobs")
    assert done.returncode == 0, done.stderr
    header, *rows = done.stdout.splitlines()
    assert header.split() == ["ID", "STATUS", "STEPS", "NAME"]
    assert len(rows) == len(jobs)
    busy = next(row for row in rows if row.startswith(jobs["running"]))
    for column in ("STATUS", "STEPS", "NAME"):  # each value starts under its heading
        assert busy[header.index(column) - 1] == " " and busy[header.index(column)] != " "
    assert busy.split() == [jobs["running"], "running", "3/4", "busy"]
    assert api.cli("jobs", "--no-header").stdout.splitlines() == rows


def test_jobs_into_a_reader_that_went_away_ends_quietly(stack):
    api, _ = stack
    read_end, write_end = os.pipe()
    os.close(read_end)  # gone before lorabox writes its first row
    env = os.environ | {"LORABOX_URL": api.url, "LORABOX_TOKEN": api.tokens["alice"]}
    try:
        done = subprocess.run([sys.executable, "-m", "cli.main", "jobs"], env=env,
                              stdout=write_end, stderr=subprocess.PIPE, text=True,
                              timeout=120)  # fmt: skip
    finally:
        os.close(write_end)
    assert (done.returncode, done.stderr) == (0, "")


def test_jobs_piped_into_head_prints_no_error(stack):
    """The issue's own `lorabox jobs | head -3`, with more rows than a pipe holds."""
    api, _ = stack
    env = os.environ | {"LORABOX_URL": api.url, "LORABOX_TOKEN": api.tokens["bob"]}
    done = subprocess.run(
        ["bash", "-c", f"set -o pipefail; {sys.executable} -m cli.main jobs | head -3"],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert (done.returncode, done.stderr) == (0, "")
    assert len(done.stdout.splitlines()) == 3 and done.stdout.startswith("ID ")


@pytest.mark.parametrize(
    ("which", "message"),
    [
        ("cancelled", "was cancelled: it has no LoRA"),
        ("failed", "failed (nan_loss): it has no LoRA"),
        ("running", "has no LoRA yet"),
    ],
)
def test_download_says_why_a_job_has_no_lora(stack, tmp_path, which, message):
    api, jobs = stack
    done = api.cli("download", jobs[which], "-o", str(tmp_path))
    assert done.returncode == 3
    assert done.stderr.strip().startswith(f"job {jobs[which]} {message}"), done.stderr
    assert ("yet" in done.stderr) == (which == "running")
    assert list(tmp_path.iterdir()) == []


def test_download_never_overwrites_a_file_without_force(stack, tmp_path):
    api, jobs = stack
    target = tmp_path / "last.safetensors"
    first = api.cli("download", jobs["done"], "-o", str(tmp_path))
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == str(target) and target.read_bytes() == LORA
    target.write_bytes(b"another job's LoRA")
    again = api.cli("download", jobs["done"], "-o", str(tmp_path))
    assert again.returncode == 1 and again.stdout == ""
    assert str(target) in again.stderr and "--force" in again.stderr
    assert target.read_bytes() == b"another job's LoRA"
    forced = api.cli("download", jobs["done"], "-o", str(tmp_path), "--force")
    assert forced.returncode == 0, forced.stderr
    assert hashlib.sha256(target.read_bytes()).digest() == hashlib.sha256(LORA).digest()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.safetensors"]  # no leftovers


def test_hold_release_and_priority_move_a_queued_job_and_refusals_say_why(stack):
    api, jobs = stack
    queued = insert_job(api.settings, status="queued", name="waiting")
    held = api.cli("hold", queued)
    assert held.returncode == 0 and "held" in held.stderr, held.stderr
    assert api.get(f"/v1/jobs/{queued}").json()["held"] is True
    assert api.cli("release", queued).returncode == 0
    lowered = api.cli("priority", queued, "low")
    assert lowered.returncode == 0 and "priority low" in lowered.stderr
    job = api.get(f"/v1/jobs/{queued}").json()
    assert (job["held"], job["priority"]) == (False, "low")
    raised = api.cli("priority", queued, "high")  # alice is no admin
    assert raised.returncode == 3 and "only admins" in raised.stderr
    running = api.cli("hold", jobs["running"])
    assert running.returncode == 3 and "running" in running.stderr
