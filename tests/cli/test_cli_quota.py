"""`lorabox user quota`: an admin's GPU-time budget for a user, on the server's database."""

from __future__ import annotations

from core.db import Database, User
from tests.cli.test_cli import _lorabox


def _quota(home) -> tuple[int | None, int | None]:
    db = Database(f"sqlite:///{home}/lorabox.db", pool_size=1)
    with db.reading() as session:
        user = session.query(User).filter_by(name="fay").one()
        budget = (user.quota_gpu_seconds, user.quota_window_s)
    db.dispose()
    return budget


def test_user_quota_sets_and_lifts_a_budget_and_refuses_half_of_one(tmp_path):
    assert _lorabox(tmp_path, "user", "add", "fay").returncode == 0
    done = _lorabox(tmp_path, "user", "quota", "fay", "--gpu-seconds", "72000", "--per", "604800")
    assert done.returncode == 0, done.stderr
    assert "72000" in done.stderr and done.stdout == ""
    assert _quota(tmp_path) == (72000, 604800)
    half = _lorabox(tmp_path, "user", "quota", "fay", "--gpu-seconds", "10")
    assert half.returncode == 2 and "--per" in half.stderr
    assert _lorabox(tmp_path, "user", "quota", "fay", "--per", "0").returncode == 2
    assert _lorabox(tmp_path, "user", "quota", "nobody", "--none").returncode == 1
    assert _lorabox(tmp_path, "user", "quota", "fay", "--none").returncode == 0
    assert _quota(tmp_path) == (None, None)
