"""The ``lorabox`` command: run the service, manage the database, users and demo models,
and (over the REST API only) submit, watch and download jobs."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence

import sqlalchemy as sa

from client.commands import add_client_commands, run_client_command
from core.db import Database, User
from core.db.migrate import upgrade
from core.errors import DomainError
from core.settings import Settings, get_settings
from core.users import add_user, revoke_user


def _db_upgrade(settings: Settings) -> None:
    settings.ensure_dirs()
    upgrade(settings.database_url)


def _user_count(settings: Settings) -> int:
    db = Database.for_settings(settings, pool_size=1)
    try:
        with db.reading() as session:
            return int(session.scalar(sa.select(sa.func.count()).select_from(User)) or 0)
    finally:
        db.dispose()


def cmd_api(args: argparse.Namespace) -> int:
    from api.serving import serve

    settings = get_settings()
    settings.ensure_dirs()
    workers = args.workers if args.workers is not None else settings.api_workers
    return serve(args.host, args.port, workers)


def cmd_worker(args: argparse.Namespace) -> int:
    if args.gpu is not None:
        # Set before anything imports torch; the trainer's child process inherits it.
        os.environ["CUDA_VISIBLE_DEVICES"] = str(args.gpu)
    from worker.celery_app import run_worker

    return run_worker(gpu=args.gpu)


def _stop_all(children: Sequence[subprocess.Popen[bytes]], timeout_s: float = 30) -> None:
    for child in children:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    for child in children:
        try:
            child.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def cmd_up(args: argparse.Namespace) -> int:
    settings = get_settings()
    _db_upgrade(settings)
    if _user_count(settings) == 0:
        print(
            "lorabox: no users yet. Add one (prints its token) with:\n"
            "  lorabox user add NAME --admin",
            file=sys.stderr,
        )
    print(f"lorabox: home {settings.home}, models {settings.models_dir}", file=sys.stderr)
    me = [sys.executable, "-m", "cli.main"]
    api_cmd = [*me, "api", "--host", args.host, "--port", str(args.port)]
    children = [subprocess.Popen(api_cmd), subprocess.Popen([*me, "worker"])]
    stopping = False

    def _on_signal(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    # Children share our process group, so Ctrl-C reaches them too; we wait for both and
    # stop the other if one exits on its own.
    while not stopping and all(c.poll() is None for c in children):
        time.sleep(0.2)
    _stop_all(children)
    failed = [c.returncode for c in children if c.returncode not in (0, -signal.SIGTERM, -2)]
    return 0 if stopping or not failed else 1


def cmd_db(args: argparse.Namespace) -> int:
    _db_upgrade(get_settings())
    print("database is up to date", file=sys.stderr)
    return 0


def cmd_user(args: argparse.Namespace) -> int:
    settings = get_settings()
    _db_upgrade(settings)
    db = Database.for_settings(settings, pool_size=1)
    try:
        with db.writing() as session:
            if args.user_command == "add":
                token = add_user(session, name=args.name, admin=args.admin)
            else:
                revoke_user(session, name=args.name)
                token = None
    except DomainError as exc:
        print(f"lorabox: {exc.message}", file=sys.stderr)
        return 1
    finally:
        db.dispose()
    if token is not None:
        print(token)  # the only thing on stdout, so `TOKEN=$(lorabox user add me)` works
    else:
        print(f"revoked {args.name}", file=sys.stderr)
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from trainer.models.tiny import write_tiny_sdxl

    settings = get_settings()
    path = write_tiny_sdxl(settings.models_dir, name=args.name)
    print(f"wrote {path} (a miniature SDXL with random weights, for demos)", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lorabox", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="API + one worker on embedded defaults (Ctrl-C stops both)")
    api = sub.add_parser("api", help="the HTTP API only")
    for p in (up, api):
        p.add_argument("--host", default="127.0.0.1")
        p.add_argument("--port", type=int, default=8000)
    api.add_argument(
        "--workers", type=int, default=None,
        help="API processes, each on its own listener (default: LORABOX_API_WORKERS, 1)",
    )  # fmt: skip
    up.set_defaults(func=cmd_up)
    api.set_defaults(func=cmd_api)
    worker = sub.add_parser("worker", help="a GPU worker (one per GPU)")
    worker.add_argument("--gpu", type=int, default=None, help="CUDA device index")
    worker.set_defaults(func=cmd_worker)
    db = sub.add_parser("db", help="database migrations")
    db.add_argument("db_command", choices=["upgrade"])
    db.set_defaults(func=cmd_db)
    user = sub.add_parser("user", help="users and tokens")
    user_sub = user.add_subparsers(dest="user_command", required=True)
    add = user_sub.add_parser("add", help="create a user; prints only its token")
    add.add_argument("name")
    add.add_argument("--admin", action="store_true")
    revoke = user_sub.add_parser("revoke", help="revoke a user's token")
    revoke.add_argument("name")
    user.set_defaults(func=cmd_user)
    models = sub.add_parser("models", help="models directory")
    models.add_argument("models_command", choices=["add-demo"])
    models.add_argument("--name", default="tiny-sdxl")
    models.set_defaults(func=cmd_models)
    # The REST client's commands (submit, jobs, status, cancel, logs, download) speak only
    # HTTP, so they work from any machine that reaches the API.
    add_client_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "client", None) is not None:
        return run_client_command(args)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
