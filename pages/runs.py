"""Runs: every run with its status, refreshed every few seconds without a reload."""
import pandas as pd
import streamlit as st

from db import queries
from db.session import session_scope
from ui.format import STATUS_ICON, duration
from ui.state import page_ready

page_ready()
st.title("📋 Runs")


@st.fragment(run_every=2)
def runs_table() -> None:
    with session_scope() as s:
        queries.reap_stale_runs(s)
        runs = queries.list_runs(s, limit=200)
        rows = [
            {
                "id": r.id, "status": f"{STATUS_ICON.get(r.status, '')} {r.status}", "playbook": r.playbook_name,
                "workload": r.workload, "device": r.device, "created": r.created_at.strftime("%Y-%m-%d %H:%M:%S"),
                "duration": duration(r.started_at, r.finished_at), "worker": r.worker or "",
            }
            for r in runs
        ]
    if not rows:
        st.info("No runs yet. Start one on the **New run** page.")
        return
    event = st.dataframe(pd.DataFrame(rows), hide_index=True, on_select="rerun", selection_mode="single-row", key="runs_df")
    selected = event.selection.rows if event else []
    if selected:
        st.switch_page("pages/run.py", query_params={"run": str(rows[selected[0]]["id"])})


runs_table()
