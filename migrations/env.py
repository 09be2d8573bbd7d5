"""Alembic environment: one set of revisions for SQLite (batch mode) and Postgres."""

from __future__ import annotations

from alembic import context

from core.db.session import Database
from core.db.tables import Base
from core.settings import get_settings

config = context.config
url = config.attributes.get("database_url") or get_settings().database_url


def run_migrations() -> None:
    db = Database(url, pool_size=1, limits=None)  # a long migration must not be cut short
    try:
        with db.engine.connect() as connection:
            context.configure(
                connection=connection,
                target_metadata=Base.metadata,
                # SQLite can't ALTER most things; batch mode copies the table instead.
                render_as_batch=db.is_sqlite,
                compare_type=True,
            )
            with context.begin_transaction():
                context.run_migrations()
            connection.commit()
    finally:
        db.dispose()


run_migrations()
