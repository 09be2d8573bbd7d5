"""Runs the Alembic migrations programmatically (CLI, `lorabox up`, tests)."""

from __future__ import annotations

from importlib.resources import files

from alembic import command
from alembic.config import Config


def alembic_config(database_url: str) -> Config:
    # The revisions ship inside the installed package (a wheel has no repository root and no
    # alembic.ini); alembic.ini serves only the `alembic` command in a checkout.
    cfg = Config()
    cfg.set_main_option("script_location", str(files("migrations")))
    cfg.attributes["database_url"] = database_url
    return cfg


def upgrade(database_url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(database_url), revision)


def downgrade(database_url: str, revision: str = "base") -> None:
    command.downgrade(alembic_config(database_url), revision)
