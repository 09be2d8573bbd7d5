"""lorabox_client is a distribution of its own: `pip install ./clients/python` into a fresh
venv brings httpx and nothing of the server, no torch, and the client works there."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# httpx and what httpx itself needs; anything more is a dependency the client must not have.
ALLOWED = {"lorabox-client", "httpx", "httpcore", "h11", "anyio", "idna", "certifi", "sniffio",
           "typing-extensions", "exceptiongroup", "pip", "setuptools"}  # fmt: skip
USE = """
import importlib.util, sys
from lorabox_client import ConnectionFailed, Lorabox
assert importlib.util.find_spec("torch") is None, "torch is installed"
try:
    Lorabox("http://127.0.0.1:9", "token").models()
except ConnectionFailed as exc:
    print("refused:", exc)
mine = {"api", "cli", "client", "core", "trainer", "worker", "torch", "pydantic"}
assert not mine & {name.split(".")[0] for name in sys.modules}, sorted(sys.modules)
"""


@pytest.mark.slow
def test_the_client_installs_alone_with_httpx_only_and_works_there(tmp_path):
    source = tmp_path / "source"  # built outside the checkout: setuptools writes build/ there
    shutil.copytree(ROOT / "clients" / "python", source)
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                    "--no-build-isolation", "-w", str(wheels), str(source)],
                   check=True, capture_output=True, text=True)  # fmt: skip
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    installed = subprocess.run([python, "-m", "pip", "install", "-q", *map(str,
                                wheels.glob("*.whl"))], capture_output=True, text=True)  # fmt: skip
    assert installed.returncode == 0, installed.stderr
    listed = subprocess.run([python, "-m", "pip", "list", "--format", "json"],
                            check=True, capture_output=True, text=True).stdout  # fmt: skip
    names = {p["name"].lower().replace("_", "-") for p in json.loads(listed)}
    assert "lorabox-client" in names and "httpx" in names
    assert names <= ALLOWED, names - ALLOWED
    used = subprocess.run([python, "-c", USE], capture_output=True, text=True, cwd=tmp_path)
    assert used.returncode == 0, used.stderr
    assert "refused: cannot reach the server" in used.stdout
