"""``lorabox submit | jobs | status | cancel | logs | download``: scripts' view of the queue.

Exit codes: 0 success (with ``--wait``: the job succeeded), 1 the job failed (for
``download``: a file to write exists already), 2 the job was cancelled, 3 a client or
server error.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from client.archive import dataset_archive
from client.http import Api, ClientError, Connection
from client.progress import ProgressBar

EXIT_OK, EXIT_FAILED, EXIT_CANCELLED, EXIT_ERROR = 0, 1, 2, 3
EXIT_EXISTS = 1  # `download` refused to overwrite a file
FINISHED_EXIT = {"succeeded": EXIT_OK, "failed": EXIT_FAILED, "cancelled": EXIT_CANCELLED}
# `lorabox jobs`: ids are 32 hex digits; a step count of up to 99999/99999 keeps NAME aligned.
JOB_ROW = "{id:<32}  {status:<9}  {steps:<11}  {name}"


def wait_for(api: Api, job_id: str, interval_s: float) -> int:
    bar = ProgressBar()
    try:
        while True:
            job = api.json("GET", f"/v1/jobs/{job_id}")
            bar.show(job)
            if job["status"] in FINISHED_EXIT:
                break
            time.sleep(interval_s)
    finally:
        bar.close()
    error = job.get("error")
    if error:
        print(f"job {job_id} {job['status']}: {error['code']}: {error['message']}", file=sys.stderr)
    else:
        print(f"job {job_id} {job['status']}", file=sys.stderr)
    return FINISHED_EXIT[job["status"]]


def cmd_submit(api: Api, args: argparse.Namespace) -> int:
    params = json.loads(args.payload.read_text())
    with dataset_archive(args.dataset) as archive:
        dataset = api.upload_dataset(archive, name=args.dataset.stem)
    for warning in dataset.get("warnings", []):
        print(f"dataset warning: {warning}", file=sys.stderr)
    body: dict[str, Any] = {"dataset_id": dataset["id"], "base_model": args.model, "params": params}
    if args.name:
        body["name"] = args.name
    # The key makes a retried submit (after a timeout, say) return the same job.
    headers = {"Idempotency-Key": args.idempotency_key or uuid.uuid4().hex}
    job = api.json("POST", "/v1/jobs", json=body, headers=headers)
    print(job["id"])
    if not args.wait:
        return EXIT_OK
    return wait_for(api, job["id"], args.interval)


def _job_row(job_id: str, status: str, steps: str, name: str) -> None:
    print(JOB_ROW.format(id=job_id, status=status, steps=steps, name=name).rstrip())


def cmd_jobs(api: Api, args: argparse.Namespace) -> int:
    params: dict[str, Any] = {"limit": 100}
    if args.status:
        params["status"] = args.status
    if args.all:
        params["scope"] = "all"
    # The header waits for the first page, so a request that fails prints nothing on stdout.
    header = not args.no_header
    for job in api.paginate("/v1/jobs", params):
        if header:
            _job_row("ID", "STATUS", "STEPS", "NAME")
            header = False
        progress = job.get("progress") or {}
        total = progress.get("total_steps") or job.get("plan", {}).get("total_steps") or "?"
        _job_row(job["id"], job["status"], f"{progress.get('step') or 0}/{total}",
                 job.get("name") or "")  # fmt: skip
    if header:  # no jobs: the header alone
        _job_row("ID", "STATUS", "STEPS", "NAME")
    return EXIT_OK


def cmd_status(api: Api, args: argparse.Namespace) -> int:
    print(json.dumps(api.json("GET", f"/v1/jobs/{args.job_id}"), indent=2))
    return EXIT_OK


def cmd_cancel(api: Api, args: argparse.Namespace) -> int:
    job = api.json("POST", f"/v1/jobs/{args.job_id}/cancel")
    print(f"job {job['id']}: {job['status']} (cancel requested)", file=sys.stderr)
    return EXIT_OK


def cmd_logs(api: Api, args: argparse.Namespace) -> int:
    offset = 0
    while True:
        chunk = api.json("GET", f"/v1/jobs/{args.job_id}/logs", params={"offset": offset})
        sys.stdout.write(chunk["text"])
        sys.stdout.flush()
        offset = chunk["next_offset"]
        if not args.follow or (chunk.get("finished") and not chunk["text"]):
            return EXIT_OK
        if not chunk["text"]:
            time.sleep(args.interval)


def _nothing_to_download(api: Api, job_id: str, what: str) -> str:
    """Why a job lists no ``what`` (LoRA, artifacts): not yet, or never will."""
    job = api.json("GET", f"/v1/jobs/{job_id}")
    status = job["status"]
    if status == "cancelled":
        return f"job {job_id} was cancelled: it has no {what}"
    if status == "failed":
        code = (job.get("error") or {}).get("code") or "no error code"
        return f"job {job_id} failed ({code}): it has no {what}"
    if status == "succeeded":
        return f"job {job_id} succeeded but lists no {what}"
    return f"job {job_id} has no {what} yet (it is {status})"


def _refuse_existing(paths: list[Path]) -> int:
    names = ", ".join(str(p) for p in paths)
    verb = "exists" if len(paths) == 1 else "exist"
    print(f"lorabox: {names} already {verb}; pass --force to overwrite", file=sys.stderr)
    return EXIT_EXISTS


def cmd_download(api: Api, args: argparse.Namespace) -> int:
    items = api.json("GET", f"/v1/jobs/{args.job_id}/artifacts")["items"]
    wanted = items if args.all else [a for a in items if a["kind"] == "lora"]
    if not wanted:
        what = "artifacts" if args.all else "LoRA"
        print(_nothing_to_download(api, args.job_id, what), file=sys.stderr)
        return EXIT_ERROR
    targets = [(artifact["name"], args.output / artifact["name"]) for artifact in wanted]
    # Checked before the first byte, so `--all` never stops half-way on the third file;
    # Api.download refuses again at the rename, for a file that appears meanwhile.
    existing = [target for _, target in targets if os.path.lexists(target)]
    if existing and not args.force:
        return _refuse_existing(existing)
    for name, target in targets:
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            api.download(f"/v1/jobs/{args.job_id}/artifacts/{name}", target, overwrite=args.force)
        except FileExistsError:
            return _refuse_existing([target])
        print(target)
    return EXIT_OK


def add_client_commands(sub: argparse._SubParsersAction) -> None:
    submit = sub.add_parser("submit", help="upload a dataset and queue a training job")
    submit.add_argument("payload", type=Path, help="Kohya_SS GUI JSON payload")
    submit.add_argument("--dataset", type=Path, required=True, help="folder or .zip")
    submit.add_argument("--model", required=True, help="base model name (GET /v1/models)")
    submit.add_argument("--name")
    submit.add_argument("--wait", action="store_true", help="follow the job until it ends")
    submit.add_argument("--idempotency-key")
    submit.set_defaults(client=cmd_submit)
    jobs = sub.add_parser("jobs", help="list jobs")
    jobs.add_argument("--status", choices=["queued", "running", "succeeded", "failed", "cancelled"])
    jobs.add_argument("--all", action="store_true", help="every user's jobs (admins)")
    jobs.add_argument("--no-header", action="store_true", help="rows only, for scripts")
    jobs.set_defaults(client=cmd_jobs)
    for name, func, text in (
        ("status", cmd_status, "show a job as JSON"),
        ("cancel", cmd_cancel, "cancel a job"),
    ):
        parser = sub.add_parser(name, help=text)
        parser.add_argument("job_id")
        parser.set_defaults(client=func)
    logs = sub.add_parser("logs", help="print a job's log")
    logs.add_argument("job_id")
    logs.add_argument("-f", "--follow", action="store_true")
    logs.set_defaults(client=cmd_logs)
    download = sub.add_parser("download", help="download the LoRA (or --all artifacts)")
    download.add_argument("job_id")
    download.add_argument("--all", action="store_true")
    download.add_argument("-o", "--output", type=Path, default=Path("."))
    download.add_argument("--force", action="store_true", help="overwrite files that exist")
    download.set_defaults(client=cmd_download)
    for parser in (submit, logs):
        parser.add_argument("--interval", type=float, default=2.0, help="poll interval, seconds")


def run_client_command(args: argparse.Namespace) -> int:
    try:
        return int(args.client(Api(Connection.from_env()), args))
    except ClientError as exc:
        print(f"lorabox: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except BrokenPipeError:
        raise  # our reader went away (`lorabox jobs | head`): cli.main ends quietly
    except (OSError, json.JSONDecodeError) as exc:
        print(f"lorabox: {exc}", file=sys.stderr)
        return EXIT_ERROR
