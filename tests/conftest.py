"""Test-wide setup: every test session gets its own data directory (SQLite database and
embedded broker) so tests never touch a developer's data; PostgreSQL and Redis are the real
ones this kind of machine runs (127.0.0.1)."""
from __future__ import annotations

import os
import tempfile
import uuid
from pathlib import Path

import pytest

_DATA = Path(tempfile.mkdtemp(prefix="speedbook-test-"))
os.environ["SPEEDBOOK_DATA"] = str(_DATA)
os.environ.pop("DATABASE_URL", None)
os.environ.pop("CELERY_BROKER_URL", None)
os.environ.pop("REDIS_URL", None)
os.environ["SPEEDBOOK_MODEL_ROOTS"] = tempfile.gettempdir()  # tests' model directories live under tmp_path
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRITON_INTERPRET", "1")  # no GPU here: Triton fixes the mode at first import (torchao/peft import it)
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("SPEEDBOOK_WARMUP", "1")  # tests check correctness, never wall-clock: few repeats
os.environ.setdefault("SPEEDBOOK_REPEATS", "3")
os.environ.setdefault("SPEEDBOOK_MIN_TIME_S", "0")

ROOT = Path(__file__).resolve().parent.parent
PG_URL = os.environ.get("SPEEDBOOK_TEST_PG", "postgresql+psycopg2://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("SPEEDBOOK_TEST_REDIS", "redis://127.0.0.1:6379/15")


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return _DATA


@pytest.fixture(scope="session")
def migrated_sqlite() -> str:
    from db.migrate import upgrade
    from db.session import database_url

    url = database_url()
    upgrade(url)
    return url


def fresh_sqlite_url() -> str:
    return f"sqlite:///{_DATA / f'db-{uuid.uuid4().hex[:8]}.sqlite'}"


def fresh_pg_url() -> str:
    """A new PostgreSQL schema for one test, via search_path, so tests never collide."""
    import sqlalchemy as sa

    schema = f"t_{uuid.uuid4().hex[:10]}"
    engine = sa.create_engine(PG_URL)
    with engine.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    engine.dispose()
    return f"{PG_URL}?options=-csearch_path%3D{schema}"


@pytest.fixture(params=["sqlite", "postgresql"])
def any_db_url(request) -> str:
    """A freshly migrated database on SQLite and on the real PostgreSQL."""
    from db.migrate import upgrade

    url = fresh_sqlite_url() if request.param == "sqlite" else fresh_pg_url()
    upgrade(url)
    return url
