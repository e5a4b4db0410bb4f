"""New run: pick a playbook, a workload and a device; submit writes the Run row, commits,
then enqueues a task carrying only the run id."""
import streamlit as st

from db import queries
from db.session import session_scope
from playbooks.schema import library, load_playbook_text
from ui.state import db_ready

db_ready()
st.title("🚀 New run")
st.caption("Apply a playbook to a real model on a worker; every step is measured against the baseline.")

lib = library()
handoff = st.session_state.get("handoff_playbook")  # YAML text from the Guide page
sources = (["From the Guide"] if handoff else []) + ["Library", "Paste YAML"]
source = st.radio("Playbook source", sources, horizontal=True)

pb, error = None, None
if source == "Library":
    name = st.selectbox("Playbook", list(lib), format_func=lambda n: f"{lib[n].title}  ({n})")
    pb = lib[name]
else:
    text = st.text_area("Playbook YAML", value=handoff if source == "From the Guide" else "", height=240)
    if text.strip():
        try:
            pb = load_playbook_text(text)
        except ValueError as err:
            error = str(err)
if error:
    st.error(f"This playbook cannot run: {error}")

from optimizers.workloads import workload_names  # noqa: E402  (after the page shell renders)

col1, col2 = st.columns(2)
workload = col1.selectbox("Workload", workload_names(), help="built-in reference models; see the README")
device = col2.selectbox("Device", ["cpu", "cuda"], help="the queue the run goes to: cpu or gpu workers")
with session_scope() as s:
    workers = queries.live_workers(s)
serving = [w for w in workers if ("gpu" if device == "cuda" else "cpu") in (w.queues or [])]
if serving:
    col2.caption("Workers on this queue: " + ", ".join(f"{w.name} ({w.device_name})" for w in serving))
else:
    col2.warning(f"No live worker listens on the {'gpu' if device == 'cuda' else 'cpu'} queue; the run will wait.")

if pb is not None:
    with st.expander(f"Steps of “{pb.title}”", expanded=True):
        for i, step in enumerate(pb.steps, 1):
            st.text(f"{i}. {step.technique}  {step.params or ''}")
        if pb.expect:
            st.text("expect: " + "; ".join(g.model_dump_json(exclude_none=True) for g in pb.expect))

if st.button("Run this playbook", type="primary", disabled=pb is None):
    from jobs import pipeline

    try:
        run_id = pipeline.submit(pb, workload, device)
    except ValueError as err:
        st.error(str(err))
    except Exception as err:  # broker down, database locked…: say what happened, no trace
        st.error(f"Could not submit the run: {type(err).__name__}: {err}")
    else:
        st.session_state.pop("handoff_playbook", None)
        st.switch_page("pages/run.py", query_params={"run": str(run_id)})
