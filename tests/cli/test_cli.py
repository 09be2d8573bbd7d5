"""The lorabox command: users, tokens and migrations, through the real entry point."""

from __future__ import annotations

import os
import subprocess
import sys

import sqlalchemy as sa

from core.db import Database
from core.db.migrate import downgrade, upgrade
from core.users import authenticate, digest


def _lorabox(home, *args: str) -> subprocess.CompletedProcess[str]:
    env = os.environ | {"LORABOX_HOME": str(home)}
    return subprocess.run(
        [sys.executable, "-m", "cli.main", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_user_add_prints_only_the_token_and_stores_its_digest(tmp_path):
    added = _lorabox(tmp_path, "user", "add", "carol", "--admin")
    assert added.returncode == 0, added.stderr
    token = added.stdout.strip()
    assert added.stdout == token + "\n" and len(token) > 30
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'lorabox.db'}")
    with engine.connect() as conn:
        row = conn.execute(sa.text("SELECT token_digest, is_admin FROM users")).one()
    assert row == (digest(token), 1)
    assert token not in (tmp_path / "lorabox.db").read_bytes().decode("latin-1")
    assert _lorabox(tmp_path, "user", "add", "carol").returncode == 1  # exists
    assert _lorabox(tmp_path, "user", "revoke", "carol").returncode == 0
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT token_digest FROM users")).scalar() is None
    engine.dispose()


def test_user_token_replaces_a_users_token_and_prints_only_the_new_one(tmp_path):
    old = _lorabox(tmp_path, "user", "add", "dave").stdout.strip()
    again = _lorabox(tmp_path, "user", "add", "dave")
    assert again.returncode == 1 and "lorabox user token dave" in again.stderr
    renewed = _lorabox(tmp_path, "user", "token", "dave")
    assert renewed.returncode == 0, renewed.stderr
    new = renewed.stdout.strip()
    assert renewed.stdout == new + "\n" and new.startswith("lbx_") and new != old
    db = Database(f"sqlite:///{tmp_path / 'lorabox.db'}", pool_size=1)
    with db.reading() as session:
        assert authenticate(session, old) is None  # revoked: only one digest is stored
        user = authenticate(session, new)
        assert user is not None and user.name == "dave"
    db.dispose()
    described = " ".join(_lorabox(tmp_path, "user", "token", "--help").stdout.split())
    assert "previous token stops working" in described and "LORABOX_AUTH_CACHE_S" in described


def test_user_token_refuses_unknown_and_revoked_users(tmp_path):
    unknown = _lorabox(tmp_path, "user", "token", "nobody")
    assert (unknown.returncode, unknown.stdout) == (1, "")
    assert "no user 'nobody'" in unknown.stderr and "lorabox user add nobody" in unknown.stderr
    _lorabox(tmp_path, "user", "add", "erin")
    _lorabox(tmp_path, "user", "revoke", "erin")
    revoked = _lorabox(tmp_path, "user", "token", "erin")
    assert (revoked.returncode, revoked.stdout) == (1, "") and "revoked" in revoked.stderr


def test_migrations_run_up_and_down_on_sqlite(tmp_path):
    url = f"sqlite:///{tmp_path / 'm.db'}"
    upgrade(url)
    downgrade(url)
    upgrade(url)
    engine = sa.create_engine(url)
    assert "jobs" in sa.inspect(engine).get_table_names()
    engine.dispose()


def test_migrations_run_up_and_down_on_postgres(postgres_url):
    upgrade(postgres_url)
    downgrade(postgres_url)
    upgrade(postgres_url)
    engine = sa.create_engine(postgres_url)
    with engine.connect() as conn:
        assert (
            conn.execute(sa.text("SELECT paused FROM queue_state WHERE id = 1")).scalar() is False
        )
    engine.dispose()
