"""The README runs as written: it opens with two set-up commands, its `sh` and `python` blocks
are the first-job walk-through and run in order in one shell against a live `lorabox up`, and
every other example is a `console` block with <placeholders> (it needs a GPU or other hosts).

The walk-through runs where a new user stands, the repository's root: a folder with the
checkout's `tests/` and `.venv` (this interpreter's), so `./var`, `./models` and `./out` are
the test's own. The one change from a new user's terminal is LORABOX_URL: the service listens
on a free port, not 8000, which may be taken.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.worker.conftest import free_port

ROOT = Path(__file__).resolve().parents[1]
FENCE = re.compile(r"^```(?P<lang>[a-z]*)\n(?P<body>.*?)^```$", re.M | re.S)
PLACEHOLDER = re.compile(r"<[a-z][a-z .-]*>")


def readme_blocks() -> list[tuple[str, str]]:
    text = (ROOT / "README.md").read_text()
    return [(m["lang"], m["body"]) for m in FENCE.finditer(text)]


def walk_through() -> str:
    """Every `sh` and `python` block after the set-up, as one bash script."""
    parts = ["set -euo pipefail"]
    for lang, body in readme_blocks()[1:]:
        if lang == "sh":
            parts.append(body)
        elif lang == "python":
            parts.append(f"python - <<'README_PYTHON'\n{body}README_PYTHON")
    return "\n".join(parts)


def test_the_readme_opens_with_two_set_up_commands_that_make_knows():
    lang, body = readme_blocks()[0]
    commands = [line.split("#", 1)[0].strip() for line in body.splitlines()]
    assert lang == "sh" and [c for c in commands if c] == ["make up", "make test"]
    for target in ("up", "test"):  # `make -n` resolves the target without running it
        done = subprocess.run(["make", "-n", target], cwd=ROOT, capture_output=True, text=True,
                              timeout=60)  # fmt: skip
        assert done.returncode == 0, done.stderr


def test_every_other_example_runs_or_is_a_console_block_with_placeholders():
    blocks = readme_blocks()[1:]
    # No other fence: a `bash` or unlabelled block would be an example nothing runs.
    languages = {lang for lang, _ in blocks}
    assert {"sh", "python"} <= languages <= {"sh", "python", "console"}, languages
    for lang, body in blocks:
        if lang == "console":
            assert PLACEHOLDER.search(body), f"a console example without <placeholders>:\n{body}"
    script = walk_through()
    assert "TOKEN" not in script.replace("LORABOX_TOKEN", "")  # the NameError of issue 15


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    where = tmp_path / "checkout"
    where.mkdir()
    (where / "tests").symlink_to(ROOT / "tests")
    (where / ".venv").symlink_to(Path(sys.prefix))  # the README's PATH=$PWD/.venv/bin
    return where


@pytest.fixture
def lorabox_up(checkout: Path) -> Iterator[tuple[dict[str, str], float]]:
    """`lorabox up` in the checkout on embedded defaults; the walk-through's environment and
    the seconds until the API answered."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LORABOX_")}
    env["LORABOX_URL"] = f"http://127.0.0.1:{port}"
    log = checkout / "up.log"
    started = time.monotonic()
    with log.open("wb") as out:
        up = subprocess.Popen([str(checkout / ".venv" / "bin" / "lorabox"), "up", "--port",
                               str(port)], cwd=checkout, env=env, stdout=out,
                              stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    try:
        while True:
            assert up.poll() is None, log.read_text()
            try:
                httpx.get(f"{env['LORABOX_URL']}/healthz", timeout=2)
                break
            except httpx.TransportError:
                assert time.monotonic() - started < 120, log.read_text()
                time.sleep(0.3)
        yield env, time.monotonic() - started
    finally:
        os.killpg(up.pid, signal.SIGINT)  # Ctrl-C, as a user stops it
        try:
            up.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(up.pid, signal.SIGKILL)
            up.wait()


@pytest.mark.slow
def test_the_first_job_walk_through_runs_as_written_against_lorabox_up(checkout, lorabox_up):
    env, up_s = lorabox_up
    started = time.monotonic()
    done = subprocess.run(["bash", "-c", walk_through()], cwd=checkout, env=env,
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    took = time.monotonic() - started
    print(f"lorabox up answered in {up_s:.1f} s; the walk-through ran in {took:.1f} s")
    up_log = (checkout / "up.log").read_text(errors="replace")[-3000:]
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}\n--- lorabox up:\n{up_log}"
    # out/<id>/ from the Python block and out/<id>-all/ from `lorabox download --all`
    # both hold the LoRA; the glob's order is the file system's.
    loras = [p for p in (checkout / "out").glob("*/*.safetensors")
             if not p.parent.name.endswith("-all")]  # fmt: skip
    assert loras, done.stdout
    job_id = loras[0].parent.name
    assert f"succeeded [PosixPath('out/{job_id}/" in done.stdout  # the Python block's print
    assert (checkout / "out" / f"{job_id}-all").is_dir()  # `lorabox download --all`
    assert '"total_steps"' in done.stdout  # curl's plan from POST /v1/jobs/validate
    assert "event: finished" in done.stdout  # curl's tail of the event stream
    assert "reused" in done.stderr and "exit status 2" in done.stdout
    # `make up` prints lorabox's lines, not the ML stack's known-harmless notices (issue 15)
    up_all = (checkout / "up.log").read_text(errors="replace")
    for noise in ("requires torchvision", "kernels-community", "Loading pipeline components"):
        assert noise not in up_all, noise
