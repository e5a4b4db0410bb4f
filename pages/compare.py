"""Compare 2–6 runs: every metric side by side with deltas against the first, and the
difference between their playbooks."""
import difflib

import pandas as pd
import streamlit as st
import yaml

from db import queries
from db.session import session_scope
from optimizers.metrics import spec
from optimizers.stats import is_interval_figure
from ui.format import delta_text, fmt_value, md_escape, or_missing, outcome_label
from ui.state import page_ready
from ui.tables import table
from ui.team import current_team_id

page_ready()
st.title("⚖️ Compare runs")
team_id = current_team_id()
with session_scope() as s:
    recent = [(r.id, f"run {r.id}: {r.playbook_name} on {r.workload} ({r.status})") for r in queries.list_runs(s, team_id=team_id, limit=300)]
if len(recent) < 2:
    st.info("Compare needs at least two runs in this team.")
    st.stop()
labels = dict(recent)
preset = [int(x) for x in st.query_params.get("runs", "").split(",") if x.isascii() and x.isdigit() and int(x) in labels][:6]
picked = st.multiselect("Runs (2 to 6; the first is the reference)", list(labels), default=preset, format_func=labels.get, max_selections=6)
if len(picked) < 2:
    st.info("Pick at least two runs.")
    st.stop()
st.query_params["runs"] = ",".join(map(str, picked))

with session_scope() as s:
    summaries = [queries.run_summary(queries.get_run(s, i)) for i in picked]
st.subheader("Outcome")
for sm in summaries:
    st.markdown(f"**run {sm['run_id']}** · {outcome_label(sm['status'], sm.get('gates_verdict'))} · "
                f"{md_escape(sm['playbook'])} on {md_escape(sm['workload'])} ({sm['device']})")
for what, key in (("workloads", "workload"), ("devices", "device"), ("scenarios", "scenario")):
    if len({sm[key] for sm in summaries}) > 1:
        st.warning(f"These runs have different {what} ({', '.join(sorted({str(sm[key]) for sm in summaries}))}): "
                   "their figures are not like with like; compare each run's ratios to its own baseline instead.")
finals = [{**sm["baseline"], **sm["final"]} if sm["final"] else sm["baseline"] for sm in summaries]
quality = [{k for k in f if k in ("perplexity", "accuracy", "pair_spearman", "embedding_cosine")} for f in finals]
if any(q != quality[0] for q in quality):
    st.warning("These runs are judged by different quality metrics: a quality figure missing in one run is not a loss.")
names = sorted({k for f in finals for k in f if not is_interval_figure(k)})
ref = finals[0]
rows = []
for name in names:
    row = {"metric": spec(name).label}
    for sm, fin in zip(summaries, finals):
        v = fin.get(name)
        row[f"run {sm['run_id']}"] = fmt_value(name, v)
        if sm is not summaries[0]:
            row[f"Δ run {sm['run_id']}"] = or_missing(delta_text(name, ref.get(name), v))
    rows.append(row)
st.subheader("Final metrics (measured)")
table(pd.DataFrame(rows))

st.subheader("Playbook differences")
with session_scope() as s:
    snaps = [yaml.safe_dump(queries.get_run(s, i).playbook_snapshot, sort_keys=False) for i in picked]
for i, other in enumerate(snaps[1:], 1):
    diff = "\n".join(difflib.unified_diff(snaps[0].splitlines(), other.splitlines(), f"run {picked[0]}", f"run {picked[i]}", lineterm=""))
    st.code(diff or "(identical playbooks)", language="diff")
