"""The read-only page a share link opens: the playbook and its runs, nothing else.
Unknown, revoked and malformed tokens all see the same "link not found"."""
from __future__ import annotations

import pandas as pd
import streamlit as st

from db import queries, sharing
from db.session import session_scope
from ui.format import headline, md_escape, metric_rows, outcome_label
from ui.outcome import outcome_banner
from ui.tables import table

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
        line = headline(sm["baseline"], sm["final"])
        with st.expander(f"{outcome_label(sm['status'], sm.get('gates_verdict'))} · run {sm['run_id']} on "
                         f"{md_escape(sm['workload'])}" + (f" · {md_escape(line)}" if line else "")):
            outcome_banner(sm)
            if sm["error"]:
                st.error(md_escape(sm["error"]))
            if sm["baseline"]:
                table(pd.DataFrame(metric_rows(sm)))
