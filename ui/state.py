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


POLL_ACTIVE_S, POLL_IDLE_S = 2, 30  # a page showing queued or running work polls often; an idle one seldom


def poll_interval(active: bool) -> int:
    """Seconds between a live fragment's reruns: an idle tab should cost (almost) no CPU (issue 16:
    the Runs page polling every 2 s used 11 % of a core with nothing running)."""
    return POLL_ACTIVE_S if active else POLL_IDLE_S


def repoll_if_changed(was_active: bool, active: bool) -> None:
    """A fragment's interval is fixed when it is defined: rerun the page when activity changed."""
    if was_active != active:
        st.rerun()
