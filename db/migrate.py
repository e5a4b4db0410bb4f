"""Apply Alembic migrations programmatically (``speedbook db upgrade``, ``make run``, tests)."""
from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

from db.session import database_url

MIGRATIONS = Path(__file__).parent / "migrations"


def alembic_config(url: str | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", (url or database_url()).replace("%", "%%"))
    return cfg


def upgrade(url: str | None = None, revision: str = "head") -> None:
    command.upgrade(alembic_config(url), revision)
