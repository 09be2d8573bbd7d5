"""``lorabox submit | wait | jobs | status | cancel | hold | release | priority | logs |
download | models list``: scripts' view of the queue, on the Python client (``lorabox_client``).

Exit codes: 0 success (with ``--wait`` and ``wait``: the job succeeded), 1 the job failed
(for ``download``: a file to write exists already), 2 the job was cancelled, 3 a client or
server error.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from lorabox_client import Job, Lorabox, LoraboxError, NothingToDownload, TargetExists
from lorabox_client.datasets import warning_text

EXIT_OK, EXIT_FAILED, EXIT_CANCELLED, EXIT_ERROR = 0, 1, 2, 3
EXIT_EXISTS = 1  # `download` refused to overwrite a file
FINISHED_EXIT = {"succeeded": EXIT_OK, "failed": EXIT_FAILED, "cancelled": EXIT_CANCELLED}
# `lorabox jobs`: ids are 32 hex digits; a step count of up to 99999/99999 keeps NAME aligned.
JOB_ROW = "{id:<32}  {status:<9}  {steps:<11}  {name}"
PRIORITIES = ("high", "normal", "low")  # the server's tiers (docs/scheduling.md)
MODEL_ROW = "{name:<32}  {kind:<4}  {format:<11}  {size:>9}  {sha}"


def _say(text: str) -> None:
    print(text, file=sys.stderr)


def _wait(job: Job, interval_s: float) -> int:
    job.wait(progress=True, interval_s=interval_s)
    error = job.error
    if error:
        _say(f"job {job.id} {job.status}: {error['code']}: {error['message']}")
    else:
        _say(f"job {job.id} {job.status}")
    return FINISHED_EXIT[job.status]


def cmd_submit(lorabox: Lorabox, args: argparse.Namespace) -> int:
    params = json.loads(args.payload.read_text())
    job = lorabox.submit(
        params,
        dataset=args.dataset,
        model=args.model,
        name=args.name,
        idempotency_key=args.idempotency_key,
        reuse_dataset=not args.new_dataset,
        priority=args.priority,
    )
    dataset = job.dataset
    if dataset is not None:
        how = "reused (uploaded before with the same content)" if dataset.reused else "uploaded"
        _say(f"dataset {dataset.id}: {how}, {dataset.image_count} images")
        for warning in dataset.warnings:
            _say(f"dataset warning: {warning_text(warning)}")
    print(job.id, flush=True)  # at once: a script may cancel it while we wait
    if not args.wait:
        return EXIT_OK
    return _wait(job, args.interval)


def cmd_wait(lorabox: Lorabox, args: argparse.Namespace) -> int:
    return _wait(lorabox.job(args.job_id), args.interval)


def _job_row(job_id: str, status: str, steps: str, name: str) -> None:
    print(JOB_ROW.format(id=job_id, status=status, steps=steps, name=name).rstrip())


def cmd_jobs(lorabox: Lorabox, args: argparse.Namespace) -> int:
    # The header waits for the first page, so a request that fails prints nothing on stdout.
    header = not args.no_header
    for job in lorabox.jobs(status=args.status, all_users=args.all):
        if header:
            _job_row("ID", "STATUS", "STEPS", "NAME")
            header = False
        progress = job.progress
        total = progress.get("total_steps") or job.data.get("plan", {}).get("total_steps") or "?"
        _job_row(job.id, job.status, f"{progress.get('step') or 0}/{total}", job.name or "")
    if header:  # no jobs: the header alone
        _job_row("ID", "STATUS", "STEPS", "NAME")
    return EXIT_OK


def cmd_status(lorabox: Lorabox, args: argparse.Namespace) -> int:
    print(json.dumps(lorabox.job(args.job_id).data, indent=2))
    return EXIT_OK


def cmd_cancel(lorabox: Lorabox, args: argparse.Namespace) -> int:
    job = lorabox.job(args.job_id).cancel()
    _say(f"job {job.id}: {job.status} (cancel requested)")
    return EXIT_OK


def cmd_hold(lorabox: Lorabox, args: argparse.Namespace) -> int:
    job = lorabox.job(args.job_id).hold()
    _say(f"job {job.id}: held (it waits until `lorabox release {job.id}`)")
    return EXIT_OK


def cmd_release(lorabox: Lorabox, args: argparse.Namespace) -> int:
    job = lorabox.job(args.job_id).release()
    _say(f"job {job.id}: released (queue position {job.data.get('queue_position')})")
    return EXIT_OK


def cmd_priority(lorabox: Lorabox, args: argparse.Namespace) -> int:
    job = lorabox.job(args.job_id).update(priority=args.tier)
    _say(f"job {job.id}: priority {job.data.get('priority')}")
    return EXIT_OK


def cmd_logs(lorabox: Lorabox, args: argparse.Namespace) -> int:
    job = lorabox.job(args.job_id)
    for text in job.logs(follow=args.follow, interval_s=args.interval):
        sys.stdout.write(text)
        sys.stdout.flush()
    return EXIT_OK


def cmd_download(lorabox: Lorabox, args: argparse.Namespace) -> int:
    job = lorabox.job(args.job_id)
    try:
        paths = job.download(args.output, all_artifacts=args.all, force=args.force)
    except TargetExists as exc:
        _say(f"lorabox: {exc}; pass --force to overwrite")
        return EXIT_EXISTS
    except NothingToDownload as exc:
        _say(str(exc))  # the reason alone: not yet, or never
        return EXIT_ERROR
    for path in paths:
        print(path)
    return EXIT_OK


def _size(size_bytes: int) -> str:
    value, unit = float(size_bytes), "B"
    for bigger in ("KiB", "MiB", "GiB", "TiB"):
        if value < 1024:
            break
        value, unit = value / 1024, bigger
    return f"{size_bytes} B" if unit == "B" else f"{value:.1f} {unit}"


def cmd_models_list(lorabox: Lorabox, args: argparse.Namespace) -> int:
    rows: list[dict[str, Any]] = [
        {"name": "NAME", "kind": "KIND", "format": "FORMAT", "size": "SIZE", "sha": "SHA256"}
    ]
    rows += [
        {"name": m["name"], "kind": m["kind"], "format": m["format"],
         "size": _size(m["size_bytes"]), "sha": m["sha256"][:12]}
        for m in lorabox.models()
    ]  # fmt: skip
    for row in rows:
        print(MODEL_ROW.format(**row))
    return EXIT_OK


def add_client_commands(sub: argparse._SubParsersAction) -> None:
    submit = sub.add_parser("submit", help="upload a dataset (unless uploaded before) and queue "
                            "a training job; prints its id")  # fmt: skip
    submit.add_argument("payload", type=Path, help="Kohya_SS GUI JSON payload")
    submit.add_argument("--dataset", type=Path, required=True, help="folder or .zip")
    submit.add_argument("--model", required=True, help="base model name (lorabox models list)")
    submit.add_argument("--name")
    submit.add_argument("--wait", action="store_true", help="follow the job until it ends")
    submit.add_argument("--idempotency-key")
    submit.add_argument(
        "--priority", choices=PRIORITIES, help="the scheduler's tier (high: admins only)"
    )
    submit.add_argument(
        "--new-dataset", action="store_true", help="upload it even if an identical one was"
    )
    submit.set_defaults(client=cmd_submit)
    wait = sub.add_parser("wait", help="follow a job until it ends; exits with its outcome")
    wait.add_argument("job_id")
    wait.set_defaults(client=cmd_wait)
    jobs = sub.add_parser("jobs", help="list jobs")
    jobs.add_argument("--status", choices=["queued", "running", "succeeded", "failed", "cancelled"])
    jobs.add_argument("--all", action="store_true", help="every user's jobs (admins)")
    jobs.add_argument("--no-header", action="store_true", help="rows only, for scripts")
    jobs.set_defaults(client=cmd_jobs)
    for name, func, text in (
        ("status", cmd_status, "show a job as JSON"),
        ("cancel", cmd_cancel, "cancel a job"),
        ("hold", cmd_hold, "keep a queued job waiting until released"),
        ("release", cmd_release, "let a held job run again"),
    ):
        parser = sub.add_parser(name, help=text)
        parser.add_argument("job_id")
        parser.set_defaults(client=func)
    priority = sub.add_parser("priority", help="move a queued job to another tier")
    priority.add_argument("job_id")
    priority.add_argument("tier", choices=PRIORITIES, help="high is for admins")
    priority.set_defaults(client=cmd_priority)
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
    for parser in (submit, wait, logs):
        parser.add_argument("--interval", type=float, default=2.0, help="poll interval, seconds")


def run_client_command(args: argparse.Namespace) -> int:
    try:
        with Lorabox() as lorabox:
            return int(args.client(lorabox, args))
    except LoraboxError as exc:
        print(f"lorabox: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except BrokenPipeError:
        raise  # our reader went away (`lorabox jobs | head`): cli.main ends quietly
    except (OSError, ValueError) as exc:  # a missing dataset, a payload that isn't JSON
        print(f"lorabox: {exc}", file=sys.stderr)
        return EXIT_ERROR
