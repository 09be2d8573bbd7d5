"""Alembic revisions, shipped as a package so an installed lorabox can migrate its database."""
