"""Cached resources for the pages and the preamble every page runs first: the sign-in guard,
then the database (migrated once per process) and, in the background, the imports the other pages need."""
from __future__ import annotations

import threading
import time

import streamlit as st

from ui.auth import guard

WARM_AFTER_S = 3.0  # after the first visitor's first page has rendered


@st.cache_resource(show_spinner=False)
def ensure_database(url: str) -> bool:
    from db.migrate import upgrade

    upgrade(url)
    return True


def _import_what_pages_need() -> None:
    time.sleep(WARM_AFTER_S)
    try:
        import pandas  # noqa: F401  (every table: Streamlit serializes it with Arrow)
        import pyarrow  # noqa: F401
        import ui.charts  # noqa: F401  (plotly)
        from optimizers.workloads import workload_names
        from playbooks.schema import library

        library(), workload_names()  # torch, the technique registry, the playbook library and the workloads
        import jobs.kernel_lab  # noqa: F401
    except Exception:  # the page that needs it imports it again and shows the error there
        import logging

        logging.getLogger("speedbook.ui").warning("warming the pages' imports failed", exc_info=True)


@st.cache_resource(show_spinner=False)
def warm_imports() -> threading.Thread:
    """Import what the other pages need (pandas and Arrow for any table, plotly, and for New run and
    the Kernel lab torch and every technique: 3–4 s in all) once per server process, in the
    background, so no visitor waits for it on a first visit (issue 16: every page usable in ≤ 2 s).
    A page that needs a module sooner imports it itself; Python's import lock makes the two share
    the one import."""
    thread = threading.Thread(target=_import_what_pages_need, name="speedbook-warm-imports", daemon=True)
    thread.start()
    return thread


def db_ready() -> None:
    from db.session import database_url

    ensure_database(database_url())
    warm_imports()


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
