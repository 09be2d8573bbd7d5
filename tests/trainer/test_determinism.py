"""Same payload, seed and data in two processes: byte-identical LoRA tensors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

from tests.factories import tiny_payload
from tests.trainer.effects import shows_effect

pytestmark = pytest.mark.slow


def run_cli(tmp_path: Path, name: str, tiny_model: Path, data: Path, seed: int) -> tuple[Path, str]:
    payload = tmp_path / f"{name}.json"
    payload.write_text(
        json.dumps(tiny_payload(seed=seed, max_train_steps=3, save_every_n_epochs=0))
    )
    out = tmp_path / name
    completed = subprocess.run(
        [sys.executable, "-m", "trainer", "--config", str(payload), "--base", str(tiny_model),
         "--data", str(data), "--out", str(out)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-2000:]
    return out / "toy.safetensors", completed.stdout


@shows_effect("seed")
def test_two_processes_give_identical_tensors_and_another_seed_differs(
    tiny_model, toy_dataset, tmp_path
):
    first, stdout = run_cli(tmp_path, "a", tiny_model, toy_dataset, seed=42)
    second, _ = run_cli(tmp_path, "b", tiny_model, toy_dataset, seed=42)
    third, _ = run_cli(tmp_path, "c", tiny_model, toy_dataset, seed=43)
    a, b, c = (load_file(str(p)) for p in (first, second, third))
    assert a.keys() == b.keys() == c.keys()
    assert all(a[k].numpy().tobytes() == b[k].numpy().tobytes() for k in a)
    assert any(a[k].numpy().tobytes() != c[k].numpy().tobytes() for k in a if "lora_up" in k)
    # The CLI prints progress a user can follow.
    assert "step 3/3" in stdout and "saved lora: toy.safetensors" in stdout


def test_cli_reports_every_payload_problem_and_exits_2(tmp_path, tiny_model, toy_dataset):
    payload = tmp_path / "bad.json"
    payload.write_text(json.dumps(tiny_payload(network_dim=0, optimizer="torch.optim.SGD")))
    completed = subprocess.run(
        [sys.executable, "-m", "trainer", "--config", str(payload), "--base", str(tiny_model),
         "--data", str(toy_dataset), "--out", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert completed.returncode == 2
    assert "network_dim" in completed.stderr and "optimizer" in completed.stderr
