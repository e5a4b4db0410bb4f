"""Cached resources for the pages: the database is migrated once per process."""
from __future__ import annotations

import streamlit as st


@st.cache_resource(show_spinner=False)
def ensure_database(url: str) -> bool:
    from db.migrate import upgrade

    upgrade(url)
    return True


def db_ready() -> None:
    from db.session import database_url

    ensure_database(database_url())
