"""`GET /metrics`: Prometheus figures computed from the database at scrape time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client.parser import text_string_to_metric_families

from core.db import Database, Dataset, User
from core.watch.prometheus import duration_histogram, steps_per_second
from tests.watched_job import insert_job


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_the_duration_histogram_is_cumulative_and_ends_with_inf():
    buckets, total = duration_histogram([30, 61, 61, 4000, 10**6])
    as_dict = dict(buckets)
    assert as_dict["60.0"] == 1 and as_dict["300.0"] == 3 and as_dict["7200.0"] == 4
    assert buckets[-1] == ("+Inf", 5) and total == 30 + 61 + 61 + 4000 + 10**6
    assert [c for _, c in buckets] == sorted(c for _, c in buckets)


def test_steps_per_second_comes_from_seconds_per_step():
    assert steps_per_second({"s_per_step": 0.25}) == 4.0
    assert steps_per_second({"s_per_step": 0}) is None and steps_per_second(None) is None


def test_metrics_count_jobs_by_status_queue_depth_durations_speed_and_uploads(fresh_service):
    settings = fresh_service.settings
    start = datetime(2026, 1, 1, tzinfo=UTC)
    for minutes in (0.5, 3):
        insert_job(settings, status="succeeded", started_at=start,
                   finished_at=start + timedelta(minutes=minutes))  # fmt: skip
    insert_job(settings, status="failed", started_at=start, finished_at=start + timedelta(hours=2))
    insert_job(settings, status="queued")
    insert_job(settings, status="queued")
    running = insert_job(settings, status="running", progress={"s_per_step": 0.5})
    db = Database(settings.database_url, pool_size=1)
    with db.writing() as session:
        owner = session.query(User).filter_by(name="bob").one()
        dataset = Dataset(owner_id=owner.id, name="d", image_count=1, caption_count=1,
                          folders=[], size_bytes=12345, sha256="0" * 64, warnings=[])  # fmt: skip
        session.add(dataset)
    db.dispose()
    response = fresh_service.client.get("/metrics")  # no token: Prometheus scrapes plainly
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    samples = _samples(response.text)
    assert samples[("lorabox_jobs", (("status", "succeeded"),))] == 2
    assert samples[("lorabox_jobs", (("status", "cancelled"),))] == 0
    assert samples[("lorabox_queue_depth", ())] == 2
    assert samples[("lorabox_job_duration_seconds_count", ())] == 3
    assert samples[("lorabox_job_duration_seconds_bucket", (("le", "60.0"),))] == 1
    assert samples[("lorabox_job_duration_seconds_bucket", (("le", "300.0"),))] == 2
    assert samples[("lorabox_job_duration_seconds_sum", ())] == 30 + 180 + 7200
    assert samples[("lorabox_job_steps_per_second", (("job_id", running),))] == 2.0
    assert samples[("lorabox_uploaded_bytes", ())] == 12345


@pytest.mark.slow
def test_a_real_finished_job_shows_in_the_metrics(watch_stack, watched):
    samples = _samples(watch_stack.client.get("/metrics").text)
    assert samples[("lorabox_jobs", (("status", "succeeded"),))] >= 1
    assert samples[("lorabox_job_duration_seconds_count", ())] >= 1
    assert samples[("lorabox_uploaded_bytes", ())] > 0
