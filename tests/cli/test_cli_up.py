"""`lorabox up`: a port in use is one line and nothing started; the worker starts only once
the API answers, and never outlives it."""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

import cli.main
from core.settings import Settings
from tests.worker.conftest import free_port

# Stand-ins for `lorabox api` and `lorabox worker`, so no real service (nor torch) starts.
# The API answers every request 503, as /healthz does while the broker is down, and exits
# with an error after a while; the worker notes whether the API had answered when it started.
FAKE_API = """
import http.server, os, pathlib, sys, threading
port, answered, lives_s = int(sys.argv[-1]), pathlib.Path(sys.argv[1]), float(sys.argv[2])
class Answer(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        answered.touch()
        self.send_response(503)
        self.end_headers()
    def log_message(self, *args):
        pass
threading.Timer(lives_s, lambda: os._exit(3)).start()
http.server.HTTPServer(("127.0.0.1", port), Answer).serve_forever()
"""
FAKE_WORKER = """
import os, pathlib, sys, time
answered = pathlib.Path(sys.argv[1]).exists()
pathlib.Path(sys.argv[2]).write_text(f"{os.getpid()} {answered}")
time.sleep(120)
"""


def test_up_on_a_port_in_use_says_so_in_one_line_and_starts_nothing(tmp_path):
    home = tmp_path / "home"
    env = os.environ | {"LORABOX_HOME": str(home), "LORABOX_MODELS_DIR": str(tmp_path / "m")}
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        started = time.monotonic()
        done = subprocess.run(
            [sys.executable, "-m", "cli.main", "up", "--port", str(port)],
            env=env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert done.returncode == 1 and time.monotonic() - started < 30
    assert len(done.stderr.splitlines()) == 1, done.stderr
    assert f"port {port}" in done.stderr and "--port" in done.stderr
    assert "PORT=" in done.stderr  # the make spelling too
    assert not home.exists()  # no database, no broker: neither the API nor a worker ran


@pytest.fixture
def fake_up(tmp_path, monkeypatch):
    """Runs cmd_up in this process with the stand-ins; returns (exit status, worker note)."""
    settings = Settings(home=tmp_path / "home", models_dir=tmp_path / "models")
    monkeypatch.setattr(cli.main, "get_settings", lambda: settings)
    answered, note = tmp_path / "answered", tmp_path / "worker-started"

    def run(api_lives_s: float, api_code: str = FAKE_API) -> tuple[int, str | None]:
        def command(*args: str) -> list[str]:
            if args[0] == "api":
                return [sys.executable, "-c", api_code, str(answered), str(api_lives_s), *args]
            return [sys.executable, "-c", FAKE_WORKER, str(answered), str(note)]

        monkeypatch.setattr(cli.main, "_lorabox_command", command)
        args = argparse.Namespace(host="127.0.0.1", port=free_port())
        status = cli.main.cmd_up(args)
        return status, note.read_text() if note.exists() else None

    return run


def test_up_starts_no_worker_when_the_api_exits_before_answering(fake_up, capsys):
    status, worker = fake_up(0, api_code="import sys; sys.exit(3)")
    assert status == 1 and worker is None
    assert "no worker was started" in capsys.readouterr().err


def test_up_starts_the_worker_once_the_api_answers_even_503_and_stops_it_with_the_api(fake_up):
    status, worker = fake_up(api_lives_s=5)
    assert status == 1 and worker is not None
    pid, api_had_answered = worker.split()
    assert api_had_answered == "True"
    with pytest.raises(ProcessLookupError):  # stopped and reaped when the API exited
        os.kill(int(pid), 0)


def test_make_up_passes_port_through(tmp_path):
    makefile = Path(__file__).parents[2] / "Makefile"
    done = subprocess.run(
        ["make", "-n", "-f", str(makefile), "up", "PORT=8123"],
        cwd=makefile.parent, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert "lorabox up --port 8123" in done.stdout, done.stdout + done.stderr
