"""The read-only page a share link opens: the playbook and its runs, nothing else.
Unknown, revoked and malformed tokens all see the same "link not found"."""
from __future__ import annotations

import pandas as pd
import streamlit as st

from db import queries, sharing
from db.session import session_scope
from ui.format import STATUS_ICON, md_escape, metric_rows
from ui.outcome import outcome_banner

NOT_FOUND = "Link not found. It may have been revoked, or it was mistyped."


def render(token: str) -> None:
    with session_scope() as s:
        pb = sharing.resolve(s, token)
        if pb is None:
            st.title("Speedbook")
            st.error(NOT_FOUND)
            return
        title, yaml_text = pb.title, pb.yaml_text
        runs = [queries.run_summary(queries.get_run(s, r.id)) for r in queries.runs_of_playbook(s, pb.id)[:20]]
    st.title(f"📎 {md_escape(title)}")
    st.caption("Shared playbook — read-only")
    st.code(yaml_text, language="yaml")
    st.subheader(f"Runs ({len(runs)})")
    if not runs:
        st.info("This playbook has not been run yet.")
    for sm in runs:
        with st.expander(f"{STATUS_ICON.get(sm['status'], '')} run {sm['run_id']} on {md_escape(sm['workload'])} — {sm['status']}"):
            outcome_banner(sm)
            if sm["error"]:
                st.error(md_escape(sm["error"]))
            if sm["baseline"]:
                st.dataframe(pd.DataFrame(metric_rows(sm)), hide_index=True)
