"""The production image, checked without a Docker engine (none runs on the development and CI
machines): a wheel built from exactly the files the Dockerfile copies, installed into a fresh
venv beside the local CPU torch, runs the commands docker-compose.yml gives its services."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path

import httpx
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"


def makefile_torch_version() -> str:
    match = re.search(r"^TORCH_VERSION\s*:?=\s*(\S+)", (ROOT / "Makefile").read_text(), re.M)
    assert match, "the Makefile states TORCH_VERSION"
    return match.group(1)


def dockerfile_copies(text: str) -> list[str]:
    """The sources of every COPY line (relative to the build context)."""
    sources: list[str] = []
    for line in text.splitlines():
        words = line.split()
        if words and words[0].upper() == "COPY":
            args = [w for w in words[1:] if not w.startswith("--")]
            sources += [a.rstrip("*") for a in args[:-1]]
    return sources


def dockerignored(path: Path) -> bool:
    """As the engine reads .dockerignore: a pattern that matches a folder excludes its files."""
    patterns = [
        line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]  # fmt: skip
    rel = path.relative_to(ROOT)
    candidates = [rel, *list(rel.parents)[:-1]]
    return any(
        fnmatch(c.as_posix(), p) or (p.startswith("**/") and fnmatch(c.name, p[3:]))
        for c in candidates
        for p in patterns
    )


def build_context(dest: Path) -> Path:
    """The files the image receives: each COPY source, less what .dockerignore keeps out."""
    for source in dockerfile_copies(DOCKERFILE.read_text()):
        for path in [ROOT / source, *sorted((ROOT / source).rglob("*"))]:
            if path.is_file() and not dockerignored(path):
                target = dest / path.relative_to(ROOT)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, target)
    return dest


def compose_command(service: str) -> list[str]:
    spec = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    command: list[str] = spec["services"][service]["command"]
    return command


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Installed:
    bin: Path
    env: dict[str, str]
    cwd: Path

    def run(self, *args: str, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(self.bin / args[0]), *args[1:]], env=self.env, cwd=self.cwd,
                              capture_output=True, text=True, timeout=timeout_s)  # fmt: skip


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    """The wheel of the Dockerfile's files in a fresh venv, as the image's `pip install .`."""
    tmp = tmp_path_factory.mktemp("image")
    context = build_context(tmp / "context")
    wheels = tmp / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
         "-w", str(wheels), str(context)],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q"]
    # torch first, as the image's base does: a dependency range must never pull a CUDA build.
    subprocess.run([*pip, f"torch=={makefile_torch_version()}"], check=True)
    subprocess.run([*pip, *map(str, wheels.glob("*.whl"))], check=True)
    home = tmp / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LORABOX_", "PYTHON"))}
    env |= {"LORABOX_HOME": str(home), "LORABOX_MODELS_DIR": str(tmp / "models"),
            "PATH": f"{venv / 'bin'}:{env.get('PATH', '')}"}  # fmt: skip
    home.mkdir()
    return Installed(venv / "bin", env, cwd=home)  # not the checkout: nothing imports from it


@contextmanager
def serving(installed: Installed, command: list[str], log: Path) -> Iterator[subprocess.Popen[str]]:
    with log.open("w") as out:
        proc = subprocess.Popen([str(installed.bin / command[0]), *command[1:]], env=installed.env,
                                cwd=installed.cwd, stdout=out, stderr=subprocess.STDOUT,
                                text=True, start_new_session=True)  # fmt: skip
        try:
            yield proc
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()


def _with_listen(command: list[str], port: int) -> list[str]:
    """Compose's api command, listening on loopback and a free port instead of 0.0.0.0:8000."""
    values = {"--host": "127.0.0.1", "--port": str(port)}
    return [values.get(prev, word) for prev, word in zip(["", *command[:-1]], command, strict=True)]


def test_every_package_pyproject_installs_is_copied_into_the_image():
    find = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    patterns = find["find"]["include"]
    packages = [
        p.name for p in ROOT.iterdir()
        if (p / "__init__.py").is_file() and any(fnmatch(p.name, pat) for pat in patterns)
    ]  # fmt: skip
    assert {"api", "cli", "client", "core", "migrations", "trainer", "worker"} <= set(packages)
    copied = {source.rstrip("/") for source in dockerfile_copies(DOCKERFILE.read_text())}
    assert sorted(set(packages) - copied) == []
    assert {"pyproject.toml", "README.md"} <= copied  # the build needs both (readme = ...)


def test_the_image_docs_and_makefile_name_one_torch_version():
    version = makefile_torch_version()
    dockerfile = DOCKERFILE.read_text()
    assert re.search(rf"^ARG TORCH_VERSION={re.escape(version)}$", dockerfile, re.M)
    base = re.search(r"^FROM (\S+)", dockerfile, re.M)
    assert base and base.group(1).startswith("pytorch/pytorch:${TORCH_VERSION}-cuda")
    readme_pins = set(re.findall(r"torch==([0-9][0-9.]*[0-9])", (ROOT / "README.md").read_text()))
    assert readme_pins == {version}


def test_the_dockerignore_keeps_environments_data_and_tests_out():
    for path in (".venv/bin/python", "var/lorabox.db", "models/x.safetensors", "tests/data",
                 "core/__pycache__/x.pyc"):  # fmt: skip
        assert dockerignored(ROOT / path), path
    assert not dockerignored(ROOT / "core" / "settings.py")


@pytest.mark.slow
def test_the_image_runs_help_db_upgrade_the_api_and_a_worker(installed: Installed, tmp_path):
    help_ = installed.run("lorabox", "--help")
    assert help_.returncode == 0 and "submit" in help_.stdout, help_.stderr

    migrate = compose_command("migrate")
    assert migrate == ["lorabox", "db", "upgrade"]
    upgraded = installed.run(*migrate)
    assert upgraded.returncode == 0, upgraded.stderr
    assert (installed.cwd / "lorabox.db").is_file()

    port = _free_port()
    api = compose_command("api")
    with serving(installed, _with_listen(api, port), tmp_path / "api.log") as proc:
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, (tmp_path / "api.log").read_text()
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
                if health.status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, (tmp_path / "api.log").read_text()
            time.sleep(0.5)

    worker = compose_command("worker")
    assert worker == ["lorabox", "worker", "--gpu", "0"]
    log = tmp_path / "worker.log"
    with serving(installed, worker, log) as proc:
        deadline = time.monotonic() + 120
        while " ready." not in log.read_text():
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.5)
