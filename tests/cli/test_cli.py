"""The lorabox command: users, tokens and migrations, through the real entry point."""

from __future__ import annotations

import os
import subprocess
import sys

import sqlalchemy as sa

from core.db.migrate import downgrade, upgrade
from core.users import digest


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
