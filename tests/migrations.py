"""Migration tests' downgrade, run as upgrades are (their ``engine`` fixture is in tests/conftest.py)."""

from __future__ import annotations

from alembic import command
from sqlalchemy import Engine

from teleconsult.storage.migrate import alembic_config

__all__ = ["downgrade"]


def downgrade(engine: Engine, revision: str) -> None:
    """As ``migrate.upgrade`` runs upgrades: one transaction, the connection handed to Alembic."""
    config = alembic_config()
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, revision)
