"""Atomic writes and the sweep of what a killed writer left behind."""

from __future__ import annotations

import os
from pathlib import Path

from trainer.storage import atomic_path, remove_temporaries


def test_the_sweep_removes_only_that_process_s_temporary_files(tmp_path: Path) -> None:
    final = tmp_path / "sub" / "a.safetensors"
    with atomic_path(final) as tmp:
        tmp.write_bytes(b"half")
        assert remove_temporaries(tmp_path, os.getpid()) == [tmp]  # the name atomic_path uses
        tmp.write_bytes(b"whole")
    other = tmp_path / f".a.safetensors.{os.getpid() + 1}.tmp"  # another attempt's, still writing
    other.write_bytes(b"busy")
    (tmp_path / f".b.png.{os.getpid()}.tmp").write_bytes(b"half")
    assert remove_temporaries(tmp_path, os.getpid()) == [tmp_path / f".b.png.{os.getpid()}.tmp"]
    assert final.read_bytes() == b"whole" and other.exists()
    assert remove_temporaries(tmp_path / "missing", os.getpid()) == []
