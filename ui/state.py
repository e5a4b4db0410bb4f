"""Cached resources for the pages and the preamble every page runs first: the sign-in guard,
then the database (migrated once per process)."""
from __future__ import annotations

import streamlit as st

from ui.auth import guard


@st.cache_resource(show_spinner=False)
def ensure_database(url: str) -> bool:
    from db.migrate import upgrade

    upgrade(url)
    return True


def db_ready() -> None:
    from db.session import database_url

    ensure_database(database_url())


def page_ready() -> None:
    """The first call of every page: signed-out visitors see the sign-in prompt and nothing else."""
    guard()
    db_ready()
