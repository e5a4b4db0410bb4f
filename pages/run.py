"""Run: steps, each metric against the baseline, progress while running, the error of a
failed run, and cancel."""
import json

import pandas as pd
import streamlit as st

from db import queries
from db.evidence import run_evidence, step_line
from db.models import FINAL_STATUSES
from db.session import session_scope
from db.dashboard import step_deltas
from optimizers.metrics import spec
from ui.charts import (loss_curves_figure, serving_figure, serving_rows, step_ratio_figure, training_memory_figure,
                       training_stages)
from ui.format import (MISSING, STATUS_ICON, duration, duration_s, fmt_value, headline, md_escape, metric_rows, outcome_label,
                       step_status)
from ui.diagnostics import step_diagnostics
from ui.outcome import headline_cards, outcome_banner
from ui.report import run_report_html
from ui.state import page_ready, poll_interval, repoll_if_changed
from ui.team import current_team_id
from ui.tables import table

page_ready()
raw = st.query_params.get("run", "")
if not (raw.isascii() and raw.isdigit() and len(raw) < 19):
    st.title("🔎 Run")
    st.info("Pick a run on the **Runs** page.")
    st.stop()
run_id = int(raw)
team_id = current_team_id()
with session_scope() as s:
    ACTIVE = queries.has_active_runs(s, run_id=run_id)


@st.fragment(run_every=poll_interval(ACTIVE))
def show() -> None:
    with session_scope() as s:
        run = queries.get_run(s, run_id)
        if run is None or run.team_id != team_id:  # another team's run is as absent as a missing one
            st.title("🔎 Run")
            st.warning(f"Run {run_id} does not exist in this team.")
            return
        summary = queries.run_summary(run)
        times = (run.created_at, run.started_at, run.finished_at)
        trial = (run.search_id, run.trial_number) if run.search_id else None
        claims = run_evidence(s, run_id)  # step index → this run's figures beside the taxonomy's claims
    repoll_if_changed(ACTIVE, summary["status"] in queries.ACTIVE)  # finished: stop polling every 2 s
    st.title(f"🔎 Run {run_id}: {md_escape(summary['playbook'])}")
    line = headline(summary["baseline"], summary["final"])
    st.markdown(f"#### {outcome_label(summary['status'], summary.get('gates_verdict'))}"
                + (f" · {md_escape(line)}" if line else ""))
    st.caption(f"{md_escape(summary['workload'])} on {summary['device']} · judged in {summary['scenario']} · {STATUS_ICON.get(summary['status'], '')} "
               f"{summary['status']} · elapsed {duration(times[1], times[2])}")
    if trial:
        st.page_link("pages/search.py", label=f"trial {trial[1]} of search {trial[0]}: all its trials and the answer",
                     icon="🎯", query_params={"search": str(trial[0])})
    steps = summary["steps"]
    done = sum(1 for s_ in steps if s_["status"] in ("succeeded", "skipped", "failed"))
    if summary["status"] in ("queued", "running"):
        current = next((s_ for s_ in steps if s_["status"] == "running"), None)
        label = (f"step {done + 1} of {len(steps)}: {current['technique']}" if current
                 else ("waiting for a worker" if summary["status"] == "queued" else "measuring the baseline"))
        info = ((current or {}).get("details") or {}).get("progress") if current else \
            (summary["environment"] or {}).get("progress")
        if info:  # the training scenario reports every step
            label += (f" · training step {info['step']} of {info['steps']}, loss {info['loss']:.4g}, "
                      f"about {duration_s(info['eta_s'])} left")
        st.progress(done / max(len(steps), 1), text=label)
        if st.button("Cancel run"):
            with session_scope() as s:
                st.toast(queries.cancel_run(s, run_id))
    outcome_banner(summary)
    headline_cards(summary)
    if summary["error"]:
        st.error(md_escape(summary["error"]))
    if summary["baseline"]:
        st.subheader("Metrics against the baseline (measured)")
        ratio_chart = step_ratio_figure(summary)
        if ratio_chart is not None:
            st.plotly_chart(ratio_chart, key="step-ratio-chart")
        table(pd.DataFrame(metric_rows(summary)))
    if summary.get("scenario") == "serving" and serving_rows(summary):
        st.subheader("Serving the trace (measured)")
        st.caption("Each stage serves the same seeded trace; latency counts from each request's arrival, queueing "
                   "included; exact = requests whose tokens equal the one-at-a-time baseline's.")
        table(pd.DataFrame(serving_rows(summary)))
        st.plotly_chart(serving_figure(summary), key="serving-chart")
    if summary.get("scenario") == "training" and training_stages(summary):
        st.subheader("Training (measured)")
        st.caption("Each stage trains a copy of the same starting model on the same seeded batches; memory is one "
                   "step's peak from torch's own accounting, split by kind; the estimate is the formula's (computed).")
        st.plotly_chart(loss_curves_figure(summary), key="loss-chart")
        st.plotly_chart(training_memory_figure(summary), key="train-memory-chart")
    st.subheader("Steps")
    for i, step in enumerate(steps, 1):
        verdict = step.get("verdict") or {}
        status = step_status(summary["status"], step["status"])
        line = f"{i}. {STATUS_ICON.get(status, '')} {step['technique']} {step['params'] or ''} — {status}"
        st.text(line)
        if i - 1 in claims:
            st.caption(f"evidence (computed from this run's measured figures): {md_escape(step_line(claims[i - 1][1]))}")
        if verdict.get("reason"):
            st.caption(f"verdict: {verdict['status']} — {md_escape(verdict['reason'])}")
        for note in step.get("notes") or []:
            st.caption(f"note: {md_escape(note)}")
        if step.get("check"):
            st.caption("correctness check (measured): " + ", ".join(f"{k} = {v:.4g}" for k, v in step["check"].items()))
        step_diagnostics(step, key=f"diag-{i}")
        if step["error"]:
            st.error(md_escape(step["error"]))
    for i, step in enumerate(steps, 1):
        if step.get("peers"):
            st.subheader(f"Step {i} ({step['technique']}) against a peer implementation (same run, same baseline)")
            rows = []
            names = set(step["metrics"] or {}).union(*(set(v) for v in step["peers"].values()))
            for name in sorted(names):
                row = {"metric": name, "ours": fmt_value(name, (step["metrics"] or {}).get(name))}
                for variant, values in step["peers"].items():
                    row[variant] = fmt_value(name, values.get(name))
                rows.append(row)
            table(pd.DataFrame(rows))
    est = summary["estimated"]
    if est:
        with st.expander("Estimator figures for this model (estimated)"):
            measured = summary["baseline"].get("stored_bytes")
            fp32 = est.get("estimated_weight_bytes_fp32")
            if measured and fp32:
                st.caption(f"Estimator error on the baseline's fp32 weights: {(fp32 / measured - 1) * 100:+.2f} % "
                           f"(estimated {fmt_value('stored_bytes', fp32)}, measured {fmt_value('stored_bytes', measured)})")
            table(pd.DataFrame([{"figure": spec(k).label, "value": fmt_value(k, v) if isinstance(v, (int, float))
                                        and not isinstance(v, bool) else (MISSING if v is None else str(v))} for k, v in est.items()]))
    if summary["environment"]:
        with st.expander("Environment (where and how it was measured)"):
            env = {k: v for k, v in summary["environment"].items() if not isinstance(v, (dict, list))}
            table(pd.DataFrame([{"": k.replace("_", " "), "value": MISSING if v is None or v == "" else str(v)} for k, v in env.items()]))
            for k, v in summary["environment"].items():
                if isinstance(v, (dict, list)) and v:
                    st.caption(k.replace("_", " "))
                    st.json(v, expanded=False)
    if summary["status"] in FINAL_STATUSES:
        with session_scope() as s:
            deltas = {m: step_deltas(s, run_id, m) for m in ("stored_bytes", "latency_ms", "perplexity", "accuracy")}
        from jobs.pipeline import artifact_zip, artifacts

        for path in artifacts(run_id):
            name = path.rsplit("/", 1)[-1]
            try:
                data = artifact_zip(path)
            except ValueError as err:
                st.warning(md_escape(str(err)))
                continue
            st.download_button(f"Download {name} (zip)", data=data, file_name=f"run-{run_id}-{name}.zip",
                               mime="application/zip", key=f"art-{name}")
        c1, c2 = st.columns(2)
        c1.download_button("Download run JSON", data=json.dumps(summary, indent=2, default=str), file_name=f"run-{run_id}.json")
        c2.download_button("Download HTML report", data=run_report_html(summary, deltas), file_name=f"run-{run_id}.html",
                           mime="text/html")


show()
