"""The ``lorabox`` command: run the service, manage the database, users and demo models,
and (over the REST API only) submit, watch and download jobs."""

from __future__ import annotations

import argparse
import errno
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence

import httpx
import sqlalchemy as sa
from sqlalchemy.orm import Session

from client.commands import add_client_commands, cmd_models_list, run_client_command
from core.db import Database, User
from core.db.migrate import upgrade
from core.errors import Conflict, DomainError, NotFound
from core.settings import Settings, get_settings
from core.users import add_user, reissue_token, revoke_user, set_quota

# How long `lorabox up` waits for its API to answer before giving up (imports, migrations
# and a slow disk included).
API_START_TIMEOUT_S = 120.0


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


def _port_problem(host: str, port: int) -> str | None:
    """Why the API could not listen on ``host:port``, or None. `up` checks before it starts
    anything: uvicorn's own "address already in use" comes ~45 lines into its start-up log."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as exc:
        return f"lorabox: cannot listen on {host}: {exc.strerror}; pick another: --host ADDRESS"
    with socket.socket(family, kind, proto) as probe:
        # As uvicorn binds: connections a previous run left in TIME_WAIT don't count.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            other = port + 1 if port < 65535 else 8000
            pick = f"lorabox up --port {other} (make up PORT={other})"
            if exc.errno == errno.EADDRINUSE:
                return (
                    f"lorabox: port {port} on {host} is already in use (another lorabox up?); "
                    f"stop it or pick another port: {pick}"
                )
            return f"lorabox: cannot listen on port {port} on {host} ({exc.strerror}); try {pick}"
    return None


def _health_url(host: str, port: int) -> str:
    # A wildcard address listens everywhere, loopback included; connect there.
    connect = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(host, host)
    if ":" in connect:  # an IPv6 address
        connect = f"[{connect}]"
    return f"http://{connect}:{port}/healthz"


def _api_answers(api: subprocess.Popen[bytes], url: str, stopping: Callable[[], bool]) -> bool:
    """Waits until the API answers HTTP at all; False if it exits (or we stop) first. Any
    status counts: /healthz says 503 while the broker is not up yet, and the API has
    started all the same."""
    deadline = time.monotonic() + API_START_TIMEOUT_S
    with httpx.Client(timeout=2, trust_env=False) as http:  # no proxy for our own API
        while api.poll() is None and not stopping():
            try:
                http.get(url)
                return True
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    return False
                time.sleep(0.2)
    return False


def _lorabox_command(*args: str) -> list[str]:
    """``lorabox ARGS`` as a child process, on this interpreter (the venv's)."""
    return [sys.executable, "-m", "cli.main", *args]


def _start_notes(settings: Settings) -> None:
    if _user_count(settings) == 0:
        print(
            "lorabox: no users yet. Add one (prints its token) with:\n"
            "  lorabox user add NAME --admin",
            file=sys.stderr,
        )
    print(f"lorabox: home {settings.home}, models {settings.models_dir}", file=sys.stderr)


def cmd_up(args: argparse.Namespace) -> int:
    problem = _port_problem(args.host, args.port)
    if problem is not None:
        print(problem, file=sys.stderr)
        return 1
    settings = get_settings()
    _db_upgrade(settings)
    _start_notes(settings)
    stopping = False

    def _on_signal(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    previous = {s: signal.signal(s, _on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    api_cmd = _lorabox_command("api", "--host", args.host, "--port", str(args.port))
    children = [subprocess.Popen(api_cmd)]
    try:
        # The worker starts only once the API serves: an `up` whose API can't start must not
        # leave a worker behind taking the queue's messages.
        url = _health_url(args.host, args.port)
        if not _api_answers(children[0], url, lambda: stopping):
            if not stopping:
                print(f"lorabox: the API did not start (no answer on {url}); no worker was "
                      "started", file=sys.stderr)  # fmt: skip
            return 0 if stopping else 1
        children.append(subprocess.Popen(_lorabox_command("worker")))
        # Children share our process group, so Ctrl-C reaches them too; we wait for both and
        # stop the other if one exits on its own.
        while not stopping and all(c.poll() is None for c in children):
            time.sleep(0.2)
    finally:
        _stop_all(children)
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    failed = [c.returncode for c in children if c.returncode not in (0, -signal.SIGTERM, -2)]
    return 0 if stopping or not failed else 1


def cmd_db(args: argparse.Namespace) -> int:
    _db_upgrade(get_settings())
    print("database is up to date", file=sys.stderr)
    return 0


def _user_action(session: Session, args: argparse.Namespace) -> str | None:
    """The new token to print, if the command made one."""
    if args.user_command == "add":
        return add_user(session, name=args.name, admin=args.admin)
    if args.user_command == "token":
        return reissue_token(session, name=args.name)
    if args.user_command == "quota":
        budget = (None, None) if args.none else (args.gpu_seconds, args.per)
        set_quota(session, name=args.name, gpu_seconds=budget[0], window_s=budget[1])
        return None
    revoke_user(session, name=args.name)
    return None


def _user_hint(args: argparse.Namespace, exc: DomainError) -> str:
    """What to run instead, after a user command was refused."""
    name = args.name
    if args.user_command == "add" and isinstance(exc, Conflict):
        return f"; for a new token (the old one stops working): lorabox user token {name}"
    if args.user_command == "token" and isinstance(exc, Conflict):
        return f"; lorabox user add {name} re-enables it with a new token"
    if isinstance(exc, NotFound):
        return f"; lorabox user add {name} creates it"
    return ""


def _user_done(args: argparse.Namespace) -> str:
    if args.user_command != "quota":
        return f"revoked {args.name}"
    if args.none:
        return f"{args.name}: no quota"
    return f"{args.name}: at most {args.gpu_seconds} GPU seconds per {args.per} s (rolling)"


def cmd_user(args: argparse.Namespace) -> int:
    if args.user_command == "quota" and not args.none and args.per is None:
        print("lorabox: --gpu-seconds needs --per SECONDS (the rolling window)", file=sys.stderr)
        return 2
    settings = get_settings()
    _db_upgrade(settings)
    db = Database.for_settings(settings, pool_size=1)
    try:
        with db.writing() as session:
            token = _user_action(session, args)
    except DomainError as exc:
        print(f"lorabox: {exc.message}{_user_hint(args, exc)}", file=sys.stderr)
        return 1
    finally:
        db.dispose()
    if token is None:
        print(_user_done(args), file=sys.stderr)
        return 0
    print(token)  # the only thing on stdout, so `TOKEN=$(lorabox user add me)` works
    if args.user_command == "token":
        print(
            f"lorabox: new token for {args.name}; the previous one stops working (an API process"
            f" that cached it accepts it for LORABOX_AUTH_CACHE_S more: {settings.auth_cache_s:g}"
            " s here)",
            file=sys.stderr,
        )
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from trainer.models.tiny import write_tiny_sdxl

    settings = get_settings()
    path = write_tiny_sdxl(settings.models_dir, name=args.name)
    print(f"wrote {path} (a miniature SDXL with random weights, for demos)", file=sys.stderr)
    return 0


def _add_quota_parser(user_sub: argparse._SubParsersAction) -> None:
    quota = user_sub.add_parser(
        "quota",
        help="a user's GPU-time budget over a rolling window (--none lifts it)",
        description="At most --gpu-seconds of worker time in any rolling --per seconds "
        "(docs/scheduling.md, Quotas). Over it, the user's jobs still queue and wait "
        "(blocked_reason quota) until the window frees time.",
    )
    quota.add_argument("name")
    budget = quota.add_mutually_exclusive_group(required=True)
    budget.add_argument("--gpu-seconds", type=_positive_int, help="e.g. 72000 (20 hours)")
    budget.add_argument("--none", action="store_true", help="lift the user's quota")
    quota.add_argument("--per", type=_positive_int, help="the window in seconds, e.g. 604800")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text}: a whole number of seconds, at least 1")
    return value


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
    token = user_sub.add_parser(
        "token",
        help="a new token for an existing user; prints only the token; the old one stops working",
        description="Issues a new token for an existing user and prints only the token "
        "(TOKEN=$(lorabox user token NAME)). The previous token stops working: only its "
        "SHA-256 digest is stored, so a lost token can be replaced, never shown again. An API "
        "process that looked the old token up in the last LORABOX_AUTH_CACHE_S seconds (5 by "
        "default) may accept it until then.",
    )
    token.add_argument("name")
    revoke = user_sub.add_parser("revoke", help="revoke a user's token")
    revoke.add_argument("name")
    _add_quota_parser(user_sub)
    user.set_defaults(func=cmd_user)
    models = sub.add_parser("models", help="base models: the server's list, a demo model")
    models_sub = models.add_subparsers(dest="models_command", required=True)
    demo = models_sub.add_parser(
        "add-demo", help="write a miniature SDXL (random weights) into the models directory"
    )
    demo.add_argument("--name", default="tiny-sdxl")
    demo.set_defaults(func=cmd_models)
    # Over the REST API, as the other client commands: it lists what the server sees.
    listing = models_sub.add_parser("list", help="the server's base models and VAEs")
    listing.set_defaults(client=cmd_models_list)
    # The REST client's commands (submit, wait, jobs, status, cancel, logs, download) speak
    # only HTTP, so they work from any machine that reaches the API.
    add_client_commands(sub)
    return parser


def _dispatch(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "client", None) is not None:
        return run_client_command(args)
    return int(args.func(args))


def main(argv: Sequence[str] | None = None) -> int:
    try:
        try:
            return _dispatch(argv)
        finally:
            # Here, not in the interpreter's last flush, where the error can't be caught: a
            # reader that went away (`lorabox jobs | head -3`) surfaces at the latest now.
            sys.stdout.flush()
    except BrokenPipeError:
        # Nothing more to say to a reader that left: end quietly, as coreutils tools do (of
        # SIGPIPE, which Python ignores). The interpreter flushes stdout once more on its
        # way out; devnull takes what is still buffered, so that flush can't fail again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
