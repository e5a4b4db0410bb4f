"""New run: pick a playbook, a workload and a device; submit writes the Run row, commits,
then enqueues a task carrying only the run id."""
import streamlit as st

from db import queries
from db.session import session_scope
from playbooks.schema import library, load_playbook_text
from ui.format import MISSING, md_escape, or_missing, param_default, user_error
from ui.state import page_ready
from ui.tables import table
from ui.team import current_team_id

page_ready()
team_id = current_team_id()
st.title("🚀 New run")
st.caption("Apply a playbook to a real model on a worker; every step is measured against the baseline.")

lib = library()
with session_scope() as s:
    saved = {p.id: (p.title, p.yaml_text) for p in queries.saved_playbooks(s, team_id)}
handoff = st.session_state.get("handoff_playbook")  # YAML text from the Guide or Saved playbooks page
sources = (["Handed over"] if handoff else []) + ["Library"] + (["Saved"] if saved else []) + ["Paste YAML"]
source = st.radio("Playbook source", sources, horizontal=True)

pb, error, playbook_id = None, None, None
if source == "Library":
    name = st.selectbox("Playbook", list(lib), format_func=lambda n: f"{lib[n].title}  ({n})")
    pb = lib[name]
elif source == "Saved":
    playbook_id = st.selectbox("Saved playbook", list(saved), format_func=lambda i: f"{saved[i][0]}  (#{i})")
    try:
        pb = load_playbook_text(saved[playbook_id][1])
    except ValueError as err:
        error = str(err)
else:
    if source == "Handed over":
        playbook_id = st.session_state.get("handoff_playbook_id")
    text = st.text_area("Playbook YAML", value=handoff if source == "Handed over" else "", height=240)
    if text.strip():
        try:
            pb = load_playbook_text(text)
        except ValueError as err:
            error = str(err)
if error:
    st.error(f"This playbook cannot run: {md_escape(error)}")

from optimizers.workloads import workload_names  # noqa: E402  (after the page shell renders)

KIND_TASKS = {"llm": "causal_lm", "encoder": "encoder", "cnn": "vision", "vit": "vision"}


def _fitting(names: list[str], pb) -> int:
    """Index of the first workload whose task the playbook's model kinds serve (edge-vision → a CNN)."""
    from optimizers.workloads import workload_task

    kinds = (pb.when.get("model_kind") if pb is not None else None) or []
    tasks = {KIND_TASKS[k] for k in ([kinds] if isinstance(kinds, str) else kinds) if k in KIND_TASKS}
    preferred = [n for n in names if workload_task(n) in tasks]
    return names.index(preferred[0]) if preferred else 0


col1, col2 = st.columns(2)
names = workload_names()
workload = col1.selectbox("Workload", names, index=_fitting(names, pb),
                          help="built-in reference models; the first one preselected fits the playbook's model kind")
local = col1.text_input("…or a local model directory", placeholder="e.g. data/models/my-llama",
                        help="a Hugging Face directory (config.json + *.safetensors) under the model folders "
                             "(SPEEDBOOK_MODEL_ROOTS); pickles and remote code are refused, as in the CLI").strip()
if local:
    from optimizers.workloads.base import WorkloadError
    from optimizers.workloads.hf import check_local_model

    try:
        check_local_model(local)
    except WorkloadError as err:
        st.error(f"This model directory cannot be used: {md_escape(str(err))}")
        blocked_model = True
    else:
        workload, blocked_model = local, False
        col1.caption(f"Using the local model `{md_escape(local)}` instead of the built-in one.")
else:
    blocked_model = False
device = col2.selectbox("Device", ["cpu", "cuda"], help="the queue the run goes to: cpu or gpu workers")
dtype = col1.selectbox("Baseline precision", ["default", "fp32", "bf16", "fp16"],
                       help="what every step is compared with: default is fp32 on CPU, bf16 on CUDA")
with session_scope() as s:
    workers = queries.live_workers(s)
serving = [w for w in workers if ("gpu" if device == "cuda" else "cpu") in (w.queues or [])]
if serving:
    col2.caption("Workers on this queue: " + ", ".join(f"{w.name} ({w.device_name})" for w in serving))
else:
    col2.warning(f"No live worker listens on the {'gpu' if device == 'cuda' else 'cpu'} queue; the run will wait.")

if pb is not None:
    with st.expander(f"Steps of “{md_escape(pb.title)}”", expanded=True):
        from optimizers import registry

        for i, step in enumerate(pb.steps, 1):
            st.text(f"{i}. {step.technique}  {step.params or ''}")
            if step.technique in registry.names():
                fields = registry.get(step.technique).Config.model_fields
                with st.popover(f"parameters of {step.technique}"):
                    table([{"parameter": k, "this playbook": repr(step.params[k]) if k in step.params else MISSING,
                            "default": param_default(f), "what it does": or_missing(f.description)}
                           for k, f in fields.items()])
        if pb.expect:
            st.text("expect: " + "; ".join(g.model_dump_json(exclude_none=True) for g in pb.expect))

scenario, blocked = None, False
if pb is not None:
    from optimizers.scenarios import SCENARIOS, default_scenario
    from optimizers.workloads import workload_task

    natural = pb.scenario or default_scenario(pb.when.get("goal"), workload_task(workload),
                                              [s_.technique for s_ in pb.steps])
    built = [n for n, sc in SCENARIOS.items() if sc.built]
    if natural in built:
        scenario = col2.selectbox("Scenario", built, index=built.index(natural), help="the protocol the run is judged in")
    else:
        st.warning(f"This playbook is judged in the {natural} scenario, and {SCENARIOS[natural].not_built}.")
        blocked = True

if st.button("Run this playbook", type="primary", disabled=pb is None or blocked or blocked_model):
    from jobs import submit

    try:
        run_id = submit.submit(pb, workload, device, team_id=team_id, playbook_id=playbook_id, scenario=scenario,
                               baseline_dtype=None if dtype == "default" else dtype)
    except Exception as err:  # bad input, broker down, database refused…: say what happened, no trace
        st.error(f"Could not submit the run: {user_error(err)}")
    else:
        st.session_state.pop("handoff_playbook", None)
        st.session_state.pop("handoff_playbook_id", None)
        st.switch_page("pages/run.py", query_params={"run": str(run_id)})
