"""Load on a real `lorabox api` process (docs/reliability.md): 50 pollers and a burst of 100
submissions, on SQLite and on Postgres, no worker. No 500, no "database is locked", and the
queue keeps each submitter's order. Slow (a real server, ~150 requests a second here)."""

from __future__ import annotations

import threading
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest

from core.settings import Settings
from tests.worker.conftest import prepare, served

pytestmark = pytest.mark.slow

POLLERS, SUBMITTERS, PER_SUBMITTER = 50, 4, 25


def _burst(settings: Settings, body_for: Any) -> None:
    tokens = prepare(settings)
    auth = {"Authorization": f"Bearer {tokens['alice']}"}
    statuses: Counter[int] = Counter()
    lock = threading.Lock()

    def count(status: int) -> None:
        with lock:
            statuses[status] += 1

    with served(settings, worker=False, LORABOX_MAX_QUEUED_PER_USER="1000") as (client, logs):
        base = str(client.base_url)
        body = body_for(client, auth)
        first = client.post("/v1/jobs", headers=auth, json=body).json()["id"]

        done = threading.Event()

        def poll() -> None:
            with httpx.Client(base_url=base, timeout=60) as c:
                while not done.is_set():
                    count(c.get(f"/v1/jobs/{first}", headers=auth).status_code)

        submitted: dict[int, list[str]] = {}

        def submit(n: int) -> None:
            with httpx.Client(base_url=base, timeout=60) as c:
                ids = []
                for _ in range(PER_SUBMITTER):
                    response = c.post("/v1/jobs", headers=auth, json=body)
                    count(response.status_code)
                    ids.append(response.json()["id"])
                submitted[n] = ids

        pollers = [threading.Thread(target=poll) for _ in range(POLLERS)]
        submitters = [threading.Thread(target=submit, args=(n,)) for n in range(SUBMITTERS)]
        for t in pollers + submitters:
            t.start()
        for t in submitters:
            t.join()
        done.set()
        for t in pollers:
            t.join()

        assert set(statuses) <= {200, 202}, statuses
        assert statuses[202] == SUBMITTERS * PER_SUBMITTER and statuses[200] > POLLERS
        with httpx.Client(base_url=base, timeout=60) as client:
            position = {}
            for ids in submitted.values():
                for job_id in ids:
                    job = client.get(f"/v1/jobs/{job_id}", headers=auth).json()
                    position[job_id] = job["queue_position"]
        for ids in submitted.values():  # each submitter's jobs queue in the order it sent them
            assert [position[j] for j in ids] == sorted(position[j] for j in ids)
        assert sorted(position.values()) == list(range(2, 2 + SUBMITTERS * PER_SUBMITTER))
    log = logs[0].read_text(errors="replace")
    assert "database is locked" not in log and "Traceback" not in log


def _body_for(make_zip: Any, make_png: Any, payload: Any) -> Any:
    data = make_zip({"1_toy/a.png": make_png(64, 64), "1_toy/a.txt": b"a toy"})

    def build(client: httpx.Client, auth: dict[str, str]) -> dict[str, Any]:
        up = client.post("/v1/datasets", headers=auth, files={"file": ("d.zip", data)})
        assert up.status_code == 201, up.text
        return {"dataset_id": up.json()["id"], "base_model": "tiny-sdxl", "params": payload()}

    return build


def test_50_pollers_and_a_burst_of_100_submissions_on_sqlite(
    tmp_path: Path, tiny_models_dir: Path, make_zip: Any, make_png: Any, payload: Any
) -> None:
    settings = Settings(home=tmp_path, models_dir=tiny_models_dir)
    _burst(settings, _body_for(make_zip, make_png, payload))


@pytest.mark.postgres
def test_50_pollers_and_a_burst_of_100_submissions_on_postgres(
    tmp_path: Path, tiny_models_dir: Path, postgres_url: str, make_zip: Any, make_png: Any,
    payload: Any,
) -> None:  # fmt: skip
    import sqlalchemy as sa

    name = f"lorabox_load_{uuid.uuid4().hex[:8]}"  # its own database: prepare() adds users
    admin = sa.create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = postgres_url.rsplit("/", 1)[0] + f"/{name}"
    try:
        settings = Settings(home=tmp_path, models_dir=tiny_models_dir, database_url=url)
        _burst(settings, _body_for(make_zip, make_png, payload))
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
