"""Evidence: every executable technique's claim from the taxonomy beside what Speedbook measured
for it (median and best over the team's stored runs per workload, device and scenario) and a
verdict; filtered by family and verdict, downloadable as CSV. Computed from the database on
each visit (db/evidence.py), never typed in."""
import pandas as pd
import streamlit as st

from db import evidence
from db.session import session_scope
from playbooks import catalog
from ui.state import page_ready
from ui.team import current_team_id
from ui.tables import table

page_ready()
st.title("🧾 Evidence")
st.caption("The claim is the taxonomy's text; every ratio is computed from figures measured in stored runs, each "
           "step against the state just before it (speed with its 95 % interval where it has one). A claim for other "
           "hardware, or for a quantity Speedbook does not measure, is marked not comparable here with the reason.")
team_id = current_team_id()
with session_scope() as s:
    found = evidence.evidence(s, team_id)
c1, c2 = st.columns(2)
families = c1.multiselect("Family", catalog.families(), placeholder="all families")
verdicts = c2.multiselect("Verdict", evidence.VERDICTS, placeholder="any verdict")
shown = [ev for ev in found if not families or ev.entry.family in families]
rows = evidence.table_rows(shown, st.query_params.get("team") or st.session_state.get("team"), verdicts)
n_runs = len({r for ev in found for g in ev.groups for r in g.run_ids})
st.caption(f"{len(found)} executable techniques, {sum(1 for ev in found if ev.groups)} measured, over {n_runs} "
           f"succeeded runs; {len(rows)} rows shown.")
if not rows:
    st.info("No technique matches these filters; clear them to see all.")
else:
    table(pd.DataFrame(rows), column_config={
        "latest run": st.column_config.LinkColumn("latest run", display_text=r"run=(\d+)"),
        "taxonomy claims": st.column_config.TextColumn("taxonomy claims", width="medium"),
    })
st.download_button("Download CSV (one row per claim)", data=evidence.to_csv(shown, verdicts),
                   file_name="speedbook-evidence.csv", mime="text/csv")
