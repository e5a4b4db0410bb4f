"""Home: what Speedbook is, three ways in, and the team's latest runs with their outcome first."""
import streamlit as st

from db.dashboard import RunFilter, runs_page
from db.session import session_scope
from ui.format import md_escape, outcome_label, pivot_headline
from ui.state import page_ready
from ui.team import current_team_id

page_ready()
st.title("⚡ Speedbook")
st.markdown("Speedbook takes a model that is too slow, too big or too costly to the optimizations that fit your "
            "goal, hardware and accuracy budget, and applies them for real. Every figure is measured against the "
            "unchanged model in the same run, or labelled an estimate.")
c1, c2, c3 = st.columns(3)
with c1.container(border=True):
    st.markdown("**Guided** — state your constraints; the taxonomy's decision guide ranks playbooks with reasons "
                "and estimates.")
    st.page_link("pages/guide.py", label="Start the guide", icon="🧭")
with c2.container(border=True):
    st.markdown("**Run a playbook** — pick one of the library's or your team's, a workload and a device; a worker "
                "applies it and measures every step.")
    st.page_link("pages/new_run.py", label="New run", icon="🚀")
with c3.container(border=True):
    st.markdown("**Look at results** — every run of your team with its gates, headline and the Pareto front.")
    st.page_link("pages/dashboard.py", label="Dashboard", icon="📊")

st.subheader("Latest runs of your team")
with session_scope() as s:
    rows, total = runs_page(s, RunFilter(team_id=current_team_id()), limit=5)
if not rows:
    st.info("No runs yet: the guide or New run starts the first one.")
for r in rows:
    line = pivot_headline(r)
    st.page_link("pages/run.py", query_params={"run": str(r["id"])},
                 label=f"run {r['id']} · {outcome_label(r['status'], r['gates_verdict'])} · {md_escape(r['playbook_name'])} on "
                       f"{md_escape(r['workload'])}" + (f" · {md_escape(line)}" if line else ""))
if total > len(rows):
    st.caption(f"{total} runs in all: see **Runs** or the **Dashboard**.")
