"""The OpenAPI document tells the truth: schemathesis' own command, run as a user would run it
against a live `lorabox api` (`st run …/openapi.json --checks all`, every phase: examples,
coverage, fuzzing, stateful), finds no failure.

Three users sign in (a WFC auth file): schemathesis moves on to the admin where an operation
refuses the others (queue pause), and replays one user's reads as another
(object_level_authorization). The stateful phase follows the document's links (an upload's id
into a submission, a job's id into its operations; api/openapi.py). What the schema cannot state
(which datasets and models exist, a Kohya payload that trains, an issued cursor) positive cases
get from the server: tests/api/schemathesis_hooks.py, which also adds a check of ours (every
error is JSON with a reason). No worker runs: jobs stay queued.

Seeded, one worker, a bounded number of examples per operation: about a minute on 2 cores.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from core.settings import Settings
from tests.worker.conftest import prepare, served

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = 12  # per operation and phase
ALL_CHECKS = {
    "not_a_server_error", "status_code_conformance", "content_type_conformance",
    "response_headers_conformance", "response_schema_conformance", "negative_data_rejection",
    "positive_data_acceptance", "missing_required_header", "unsupported_method",
    "allow_header_conformance", "use_after_free", "ensure_resource_availability",
    "ignored_auth", "object_level_authorization", "errors_are_json_with_a_reason",
}  # fmt: skip
# The event stream follows a job until it ends, and these jobs never run: read two events
# (or for two seconds) and judge what came.
CONFIG = """\
hooks = "tests.api.schemathesis_hooks"

[[operations]]
include-path = "/v1/jobs/{job_id}/events"
max-stream-events = 2
request-timeout = 2
"""


def _wfc(tokens: dict[str, str]) -> dict[str, Any]:
    """Web Fuzzing Commons auth: the first identity an operation accepts is used."""
    return {
        "auth": [
            {"name": name, "fixedHeaders": [{"name": "Authorization", "value": f"Bearer {t}"}]}
            for name, t in ((n, tokens[n]) for n in ("alice", "bob", "admin"))
        ]
    }


def _run(url: str, workdir: Path, tokens: dict[str, str]) -> tuple[Any, Path]:
    (workdir / "schemathesis.toml").write_text(CONFIG)
    (workdir / "wfc.json").write_text(json.dumps(_wfc(tokens)))
    report = workdir / "run.ndjson"
    command = [
        sys.executable, "-m", "schemathesis.cli", "--config-file", "schemathesis.toml",
        "run", f"{url}/openapi.json", "--checks", "all",
        "--phases", "examples,coverage,fuzzing,stateful", "--max-examples", str(EXAMPLES),
        "--seed", "0", "--workers", "1", "--generation-database", "none",
        "--auth-wfc", "wfc.json", "--request-timeout", "10", "--no-color",
        "--report", "ndjson", "--report-ndjson-path", str(report),
    ]  # fmt: skip
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    done = subprocess.run(command, cwd=workdir, env=env, capture_output=True, text=True,
                          timeout=600)  # fmt: skip
    return done, report


def _scenarios(report: Path) -> list[dict[str, Any]]:
    events = (json.loads(line) for line in report.read_text().splitlines())
    return [e["ScenarioFinished"] for e in events if "ScenarioFinished" in e]


def _figures(scenarios: list[dict[str, Any]]) -> dict[str, Any]:
    """Operations, cases, check verdicts, and (operation, status) pairs per phase."""
    checks: Counter[tuple[str, str]] = Counter()
    reached: dict[str, Counter[tuple[str, int]]] = {}
    cases = 0
    for scenario in scenarios:
        recorder = scenario["recorder"]
        cases += len(recorder.get("cases", {}))
        for verdicts in recorder.get("checks", {}).values():
            checks.update((v["name"], v["status"]) for v in verdicts)
        statuses = reached.setdefault(scenario["phase"], Counter())
        for case_id, case in recorder.get("cases", {}).items():
            response = recorder.get("interactions", {}).get(case_id, {}).get("response")
            if response:
                value = case["value"]
                statuses[f"{value['method']} {value['path']}", response["status_code"]] += 1
    tested = {s["recorder"]["label"] for s in scenarios
              if s["status"] != "skip" and s["phase"] != "stateful"}  # fmt: skip
    return {"operations": tested, "cases": cases, "checks": checks, "reached": reached}


def test_schemathesis_finds_no_failure_in_any_phase(tmp_path, fake_models_dir, capsys):
    settings = Settings(home=tmp_path / "home", models_dir=fake_models_dir)
    tokens = prepare(settings)
    with served(settings, worker=False) as (client, _logs):
        url = str(client.base_url).rstrip("/")
        document = client.get("/openapi.json").json()
        done, report = _run(url, tmp_path, tokens)
    summary = done.stdout[done.stdout.rfind("SUMMARY") :]
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    figures = _figures(_scenarios(report))
    assert {name for (name, status) in figures["checks"] if status != "success"} == set(), summary
    with capsys.disabled():
        print(f"\nschemathesis: {len(figures['operations'])} operations, "
              f"{figures['cases']} cases, 0 failures\n{summary}")  # fmt: skip
    # Not vacuous: every check ran, on every operation the document lists...
    assert {name for (name, _) in figures["checks"]} >= ALL_CHECKS
    documented = {f"{m.upper()} {path}" for path, ops in document["paths"].items() for m in ops}
    assert figures["operations"] == documented
    # ... and the stateful phase made datasets and jobs, then acted on a real job.
    stateful = figures["reached"]["stateful"]
    assert stateful["POST /v1/datasets", 201] and stateful["POST /v1/jobs", 202], stateful
    on_a_job = [label for label, status in stateful
                if "{job_id}" in label and 200 <= status < 300]  # fmt: skip
    assert on_a_job, stateful
