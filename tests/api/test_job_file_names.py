"""A job whose payload leaves ``output_name`` to the host (the seed's ``"..."``) saves its
files under the job's name, else its short id; a name the user wrote is kept
(core/jobs/naming.py). The names are decided at submit, in the config the worker runs."""

from __future__ import annotations

from typing import Any

from core.db import Database, Job


def _output_name(service, job_id: str) -> str:
    db = Database(service.settings.database_url, pool_size=1)
    try:
        with db.writing() as session:
            job = session.get(Job, job_id)
            assert job is not None
            name: str = job.config["output_name"]
    finally:
        db.dispose()
    return name


def _submit(service, job_body: dict[str, Any], **changes: Any) -> str:
    body = {**job_body, **changes}
    response = service.submit("alice", body)
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


def test_unnamed_jobs_with_the_seeds_elided_name_get_different_stems(service, job_body):
    assert job_body["params"]["output_name"] == "..."  # as the seed payload has it
    first, second = _submit(service, job_body), _submit(service, job_body)
    assert _output_name(service, first) == first[:8]
    assert _output_name(service, second) == second[:8]
    assert first[:8] != second[:8]


def test_a_named_job_saves_under_its_name_made_safe_for_a_file(service, job_body):
    job = _submit(service, job_body, name="Chloé's style / v2")
    assert _output_name(service, job) == "Chloe_s_style_v2"
    nothing_left = _submit(service, job_body, name="///")
    assert _output_name(service, nothing_left) == nothing_left[:8]


def test_an_output_name_the_user_wrote_is_kept(service, job_body):
    for written in ("my-style", "last"):
        params = {**job_body["params"], "output_name": written}
        assert _output_name(service, _submit(service, job_body, name="x", params=params)) == written
    unset = {k: v for k, v in job_body["params"].items() if k != "output_name"}
    assert _output_name(service, _submit(service, job_body, params=unset, name="y")) == "y"
