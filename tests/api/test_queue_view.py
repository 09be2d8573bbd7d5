"""GET /v1/queue: the team's view. Everyone sees every running and queued job's name, owner
and place (as stored by the scheduler), never another user's params, dataset or files; pages
follow the stored order; each counted worker shows its GPU, job and memory in use."""

from __future__ import annotations

from datetime import timedelta

from core.db import Database
from core.db.tables import utcnow
from core.workers.registry import report_worker
from tests.api.test_workers_api import _report
from tests.watched_job import insert_job

SHOWN = {"id", "name", "owner", "mine", "base_model", "status", "queue_position", "priority",
         "held", "blocked_reason", "estimated_start_at", "estimated_finish_at", "created_at",
         "started_at"}  # fmt: skip


def test_a_colleague_sees_a_jobs_name_and_place_but_not_its_contents(service, job_body, payload):
    secret = "a secret prompt --w 64 --h 64"
    body = job_body | {"name": "alice-portrait", "params": payload(sample_prompts=secret)}
    submitted = service.submit("alice", body)
    assert submitted.status_code == 202, submitted.text
    job = submitted.json()

    seen_by_bob = service.client.get("/v1/queue", headers=service.as_("bob"))
    assert seen_by_bob.status_code == 200, seen_by_bob.text
    [item] = seen_by_bob.json()["items"]
    assert set(item) == SHOWN
    assert (item["id"], item["name"], item["owner"], item["mine"]) == (
        job["id"],
        "alice-portrait",
        "alice",
        False,
    )
    assert (item["base_model"], item["status"], item["priority"]) == ("base", "queued", "normal")
    assert item["queue_position"] == job["queue_position"]  # the place the job's poll shows
    # Nothing of the job's contents anywhere in the answer: not its dataset, params or files.
    for private in (job["dataset_id"], "secret prompt", "network_dim", "safetensors"):
        assert private not in seen_by_bob.text
    # Bob still cannot open it; Alice sees it marked as hers.
    assert (
        service.client.get(f"/v1/jobs/{job['id']}", headers=service.as_("bob")).status_code == 404
    )
    mine = service.client.get("/v1/queue", headers=service.as_("alice")).json()["items"]
    assert [(i["id"], i["mine"]) for i in mine] == [(job["id"], True)]


def _stored_queue(settings) -> dict[str, str]:
    """Jobs as the scheduler leaves them: positions that differ from submission order, one
    not placed yet, a held one, one running, and finished ones that the queue never shows."""
    base = utcnow() - timedelta(hours=1)
    at = {name: base + timedelta(minutes=i) for i, name in enumerate("abcdefg")}
    ids = {
        "run": insert_job(settings, "bob", status="running", name="run", created_at=at["a"],
                          started_at=at["b"]),
        "third": insert_job(settings, "alice", name="third", created_at=at["b"], queue_position=3),
        "first": insert_job(settings, "bob", name="first", created_at=at["c"], queue_position=1,
                            priority="high"),
        "unplaced": insert_job(settings, "alice", name="unplaced", created_at=at["d"]),
        "second": insert_job(settings, "alice", name="second", created_at=at["e"],
                             queue_position=2, held=True, blocked_reason="held",
                             estimated_start_at=at["f"], estimated_finish_at=at["g"]),
    }  # fmt: skip
    for status in ("succeeded", "failed", "cancelled"):
        insert_job(settings, "alice", name=status, status=status, blocked_reason="quota")
    return ids


def _add_worker(settings) -> None:
    db = Database(settings.database_url, pool_size=1)
    with db.writing() as session:
        gpu = _report("gpu0", free_memory_bytes=6 << 30)
        report_worker(session, settings, gpu, state="busy", current_job_id="r" * 32,
                      process="box:1", started_at=utcnow())  # fmt: skip
    db.dispose()


def test_the_queue_follows_the_stored_order_in_pages_with_workers_and_state(service):
    ids = _stored_queue(service.settings)
    _add_worker(service.settings)
    alice = service.as_("alice")

    whole = service.client.get("/v1/queue", headers=alice).json()
    names = [i["name"] for i in whole["items"]]
    assert names == ["run", "first", "second", "third", "unplaced"]
    assert (whole["running"], whole["queued"], whole["next_cursor"]) == (1, 4, None)
    assert (whole["paused"], whole["scheduler"]) == (False, "fair")
    by_name = {i["name"]: i for i in whole["items"]}
    assert by_name["run"]["queue_position"] is None and by_name["run"]["mine"] is False
    assert by_name["first"]["priority"] == "high"
    second = by_name["second"]
    assert (second["held"], second["blocked_reason"], second["mine"]) == (True, "held", True)
    assert second["estimated_start_at"] and second["estimated_finish_at"]
    assert by_name["unplaced"]["queue_position"] is None
    assert by_name["third"]["id"] == ids["third"]
    [worker] = whole["workers"]
    assert worker == {"name": "gpu0", "gpu_name": "NVIDIA GeForce RTX 4070 Ti SUPER",
                      "state": "busy", "current_job_id": "r" * 32,
                      "memory_used_bytes": 10 << 30, "memory_total_bytes": 16 << 30}  # fmt: skip

    # Pages of two walk the same order once; a job added meanwhile lands behind the cursor.
    seen: list[str] = []
    cursor = None
    while True:
        query = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = service.client.get("/v1/queue", headers=alice, params=query).json()
        seen += [i["name"] for i in page["items"]]
        cursor = page["next_cursor"]
        if len(seen) == 2:
            insert_job(service.settings, "bob", name="late", queue_position=0)
        if cursor is None:
            break
    assert seen == names

    service.client.post("/v1/queue/pause", headers=service.as_("admin"))
    assert service.client.get("/v1/queue", headers=alice).json()["paused"] is True


def test_a_bad_cursor_is_a_422_naming_it_and_fifo_is_reported(service_with):
    service = service_with(scheduler="fifo")
    alice = service.as_("alice")
    bad = service.client.get("/v1/queue", headers=alice, params={"cursor": "bm90LWEta2V5"})
    assert bad.status_code == 422, bad.text
    assert bad.json()["detail"][0]["loc"] == ["query", "cursor"]
    assert service.client.get("/v1/queue", headers=alice).json()["scheduler"] == "fifo"
    assert service.client.get("/v1/queue").status_code == 401
