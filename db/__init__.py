"""Persistence: SQLAlchemy 2 models, the engine/session, queries and Alembic migrations.
SQLite (WAL) by default in the data directory; PostgreSQL through ``DATABASE_URL``."""
