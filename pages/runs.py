"""Runs: every run with its status, refreshed every few seconds without a reload."""
import pandas as pd
import streamlit as st

from db import queries
from db.session import session_scope
from db.dashboard import RunFilter, runs_page
from ui.format import duration, or_missing, outcome_label, pivot_headline
from ui.state import page_ready, poll_interval, repoll_if_changed
from ui.tables import table
from ui.team import current_team_id

page_ready()
st.title("📋 Runs")


team_id = current_team_id()
with session_scope() as s:
    ACTIVE = queries.has_active_runs(s, team_id)


@st.fragment(run_every=poll_interval(ACTIVE))
def runs_table() -> None:
    with session_scope() as s:
        queries.reap_stale_runs(s)
        runs, _ = runs_page(s, RunFilter(team_id=team_id), limit=200)  # with the headline's figures, one query
        active = queries.has_active_runs(s, team_id)
        rows = [
            {
                "id": r["id"], "outcome": outcome_label(r["status"], r["gates_verdict"]), "headline": or_missing(pivot_headline(r)),
                "playbook": r["playbook_name"], "workload": r["workload"], "device": r["device"],
                "created": r["created_at"].strftime("%Y-%m-%d %H:%M:%S"), "duration": duration(r["started_at"], r["finished_at"]),
                "worker": or_missing(r["worker"]),
            }
            for r in runs
        ]
    repoll_if_changed(ACTIVE, active)  # a run started or ended: poll at the new rate
    if not rows:
        st.info("No runs yet. Start one on the **New run** page.")
        return
    event = table(pd.DataFrame(rows), on_select="rerun", selection_mode="single-row", key="runs_df")
    selected = event.selection.rows if event else []
    if selected:
        st.switch_page("pages/run.py", query_params={"run": str(rows[selected[0]]["id"])})


def maintenance() -> None:
    """Re-send runs whose task message the broker lost (jobs.sweeper), and show refused messages."""
    from jobs import sweeper

    try:
        sweeper.sweep()
    except Exception:  # broker down: the submit path says so; this page still lists runs
        st.caption("The broker cannot be reached right now; queued runs wait for it.")
    with session_scope() as s:
        letters = [(d.received_at, d.task, d.reason, d.excerpt) for d in queries.dead_letters(s)]
    if letters:
        with st.expander(f"Refused task messages ({len(letters)})"):
            st.caption("Messages no worker could run (malformed or not JSON); acknowledged so they cannot stop a worker.")
            table(pd.DataFrame(letters, columns=["received", "task", "reason", "first bytes"]))


runs_table()
maintenance()
