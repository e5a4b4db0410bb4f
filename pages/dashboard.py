"""Team dashboard: filter runs, sort and page through them (in SQL), see the quality-vs-speed
Pareto front, memory bars and a per-step waterfall; export CSV / JSON."""
import json

import pandas as pd
import streamlit as st

from db.dashboard import SORTABLE, RunFilter, count_runs, filter_choices, runs_page, step_deltas
from db.session import session_scope
from ui.charts import dashboard_row, memory_bars, pareto_figure, waterfall
from ui.format import column_label
from ui.state import page_ready
from ui.tables import table
from ui.team import current_team_id

page_ready()
st.title("📊 Dashboard")
team_id = current_team_id()
with session_scope() as s:
    choices = filter_choices(s, team_id)

with st.expander("Filters", expanded=True):
    c1, c2, c3 = st.columns(3)
    f = RunFilter(
        team_id=team_id,
        workloads=c1.multiselect("Workload", choices["workloads"]),
        techniques=c1.multiselect("Technique", choices["techniques"]),
        playbooks=c2.multiselect("Playbook", choices["playbooks"]),
        devices=c2.multiselect("Device", choices["devices"]),
        statuses=c3.multiselect("Status", choices["statuses"]),
    )
    dates = c3.date_input("Created between", value=(), help="leave empty for all dates")
    if isinstance(dates, (list, tuple)) and len(dates) == 2:
        f.since, f.until = dates

c1, c2, c3 = st.columns([2, 1, 1])
sort = c1.selectbox("Sort by", SORTABLE, index=0)
descending = c2.toggle("Descending", value=True)
page_size = c3.selectbox("Rows per page", [25, 50, 100], index=1)
with session_scope() as s:
    total = count_runs(s, f)
pages = max(1, -(-total // page_size))
page_no = st.number_input(f"Page (of {pages})", min_value=1, max_value=pages, value=1)
with session_scope() as s:
    rows, total = runs_page(s, f, sort=sort, descending=descending, limit=page_size, offset=(page_no - 1) * page_size)

if not rows:
    st.info("No runs match. Start one on the **New run** page, or clear the filters.")
    st.stop()

table_df = pd.DataFrame([dashboard_row(r) for r in rows])
st.caption(f"{total} runs match; showing {len(rows)}. All figures measured; ratios against each run's own baseline.")
table(table_df, column_config={"created": st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm"),
                               "speed-up ×": st.column_config.NumberColumn(format="%.3f"),
                               "speed-up 95 % low": st.column_config.NumberColumn(format="%.2f"),
                               "speed-up 95 % high": st.column_config.NumberColumn(format="%.2f"),
                               "quality loss %": st.column_config.NumberColumn(format="%.3f"),
                               "stored ×": st.column_config.NumberColumn(format="%.3f"),
                               **{column_label(m, "final "): st.column_config.NumberColumn(format="%.2f")
                                  for m in ("stored_bytes", "peak_memory_bytes")}})
d1, d2 = st.columns(2)
d1.download_button("Export CSV", table_df.to_csv(index=False), file_name="speedbook-runs.csv", mime="text/csv")
d2.download_button("Export JSON", json.dumps(rows, default=str, indent=2), file_name="speedbook-runs.json", mime="application/json")

st.plotly_chart(pareto_figure(rows))
st.plotly_chart(memory_bars(rows[:20]))

st.subheader("Per-step deltas")
pick = st.selectbox("Run", [r["id"] for r in rows], format_func=lambda i: f"run {i}")
metric = st.selectbox("Metric", ["stored_bytes", "latency_ms", "perplexity", "peak_memory_bytes", "accuracy", "embedding_cosine"])
with session_scope() as s:
    deltas = step_deltas(s, pick, metric)
if len(deltas) > 1:
    st.plotly_chart(waterfall(deltas, metric))
else:
    st.info(f"Run {pick} has no measured steps for {metric}.")
