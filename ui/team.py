"""The current team (workspace): chosen in the sidebar, remembered in the URL (?team=slug)."""
from __future__ import annotations

import re

import streamlit as st

from db import queries
from db.session import session_scope

SLUG_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")


def team_selector() -> None:
    """Sidebar widget; keeps ``?team=`` in the URL on every page."""
    with session_scope() as s:
        teams = {t.slug: t.name for t in queries.teams(s)}
    wanted = st.query_params.get("team") or st.session_state.get("team") or "default"
    if wanted not in teams:
        wanted = "default"
    slugs = list(teams)
    slug = st.sidebar.selectbox("Team", slugs, index=slugs.index(wanted), format_func=lambda x: teams[x], key="team")
    st.query_params["team"] = slug
    with st.sidebar.expander("New team"):
        new = st.text_input("Slug (lowercase, digits, dashes)", key="new_team_slug")
        if st.button("Create team", key="create_team") and new:
            if not SLUG_RE.match(new):
                st.error("slug must be lowercase letters, digits and dashes, e.g. `vision-team`")
            else:
                with session_scope() as s:
                    queries.ensure_team(s, new, new)
                st.session_state.pop("team", None)
                st.query_params["team"] = new
                st.rerun()


def current_team_id() -> int:
    slug = st.query_params.get("team") or st.session_state.get("team") or "default"
    with session_scope() as s:
        for t in queries.teams(s):
            if t.slug == slug:
                return t.id
    return queries.DEFAULT_TEAM_ID
