"""Search: try a playbook's search: space as trials on the workers (two workers, twice the
trials at once), watch them arrive, read the answer off the Pareto chart, save it as a playbook."""
import pandas as pd
import streamlit as st

from db import queries
from db.models import Search
from db.session import session_scope
from jobs import search
from playbooks.schema import library, load_playbook_text
from ui.charts import search_figure
from ui.format import MISSING, user_error
from ui.state import page_ready, poll_interval, repoll_if_changed
from ui.tables import table
from ui.team import current_team_id

page_ready()
team_id = current_team_id()
st.title("🎯 Search")
st.caption("Vary a playbook's parameters over the workers until its gates are met. Every trial is an ordinary, "
           "measured run; the answer is the best configuration that meets every gate, or the closest miss.")


def searchable() -> dict[str, tuple[str, str]]:
    """Library and saved playbooks with a search: section, as {key: (title, yaml)}."""
    out = {f"library:{n}": (pb.title, pb.to_yaml()) for n, pb in library().items() if pb.search}
    with session_scope() as s:
        for p in queries.saved_playbooks(s, team_id):
            try:
                if load_playbook_text(p.yaml_text).search:
                    out[f"saved:{p.id}"] = (f"{p.title} (saved #{p.id})", p.yaml_text)
            except ValueError:
                continue  # a saved playbook that no longer parses is the Saved playbooks page's business
    return out


def space_rows(pb) -> list[dict[str, str]]:
    from playbooks import search as sp

    rows = []
    for d in sp.dims(pb.search, pb.steps):
        vals = d.finite
        rows.append({"parameter": d.key, "values": ", ".join(map(str, vals)) if vals is not None else
                     f"{d.range.low:g} … {d.range.high:g}" + (" (log)" if d.range.log else "")})
    return rows


def tunable_fields(technique: str) -> dict[str, object]:
    """A technique's config fields a search can vary: numbers, booleans and choices."""
    from typing import Literal, get_args, get_origin

    from optimizers import registry

    if technique not in registry.names():
        return {}
    out = {}
    for name, f in registry.get(technique).Config.model_fields.items():
        ann = f.annotation
        args = [a for a in get_args(ann) if a is not type(None)]
        base = args[0] if get_origin(ann) is not Literal and len(args) == 1 else ann
        if base in (int, float, bool) or get_origin(base) is Literal:
            out[name] = f
    return out


def marked_space(pb) -> dict[str, list] | None:
    """The user's marks: for each step, values to try per parameter (YAML lists, typed)."""
    import yaml

    space: dict[str, list] = {}
    for i, step in enumerate(pb.steps):
        fields = tunable_fields(step.technique)
        if not fields:
            continue
        with st.expander(f"steps[{i}] {step.technique}"):
            for name, f in fields.items():
                text = st.text_input(f"{name} — values to try", key=f"mark-{i}-{name}",
                                     placeholder=f"e.g. {step.params.get(name, f.default)!r}, … (comma-separated)",
                                     help=f.description or None).strip()
                if not text:
                    continue
                try:
                    values = yaml.safe_load(f"[{text}]")
                except yaml.YAMLError:
                    st.error(f"steps[{i}].{name}: write the values comma-separated, e.g. 32, 64, 128")
                    return None
                space[f"steps[{i}].{name}"] = values
    return space


def new_search() -> None:
    options = searchable()
    handoff = st.session_state.get("handoff_tune")  # YAML text from the Guide's "Tune this"
    modes = (["From the Guide"] if handoff else []) + (["Playbook with a search"] if options else []) + [
        "Mark parameters of any playbook"]
    mode = st.radio("What to tune", modes, horizontal=True)
    if mode == "Playbook with a search":
        key = st.selectbox("Playbook", list(options), format_func=lambda k: options[k][0])
        pb = load_playbook_text(options[key][1])
    else:
        if mode == "From the Guide":
            pb = load_playbook_text(handoff)
            st.caption(f"From the Guide: {pb.title}")
        else:
            lib = library()
            name = st.selectbox("Playbook", list(lib), format_func=lambda n: f"{lib[n].title}  ({n})")
            pb = lib[name]
        if pb.search is None:
            st.caption("Give each parameter to vary its values; objectives are the playbook's gates.")
            space = marked_space(pb)
            if space is None:
                return
            if not space:
                st.info("Mark at least one parameter to vary.")
                return
            try:
                pb = load_playbook_text(pb.model_copy(update={"search": None}).to_yaml())
                data = pb.model_dump()
                data["search"] = {"space": space, "strategy": "grid" if len(space) <= 3 else "tpe"}
                from playbooks.schema import parse_playbook

                pb = parse_playbook(data)
            except ValueError as err:
                st.error(f"This search cannot run: {user_error(err)}")
                return
    st.caption("Searchable parameters")
    table(space_rows(pb))
    if pb.expect:
        st.caption("Gates: " + "; ".join(g.model_dump_json(exclude_none=True) for g in pb.expect))
    else:
        st.caption("No gates: trials are ranked by the objectives alone.")
    from optimizers.workloads import workload_names

    names = workload_names()
    c1, c2, c3 = st.columns(3)
    workload = c1.selectbox("Workload", names, index=names.index("ref-lm") if "ref-lm" in names else 0)
    device = c1.selectbox("Device", ["cpu", "cuda"])
    strategy = c2.selectbox("Strategy", ["grid", "random", "tpe"], index=["grid", "random", "tpe"].index(pb.search.strategy),
                            help="grid tries every configuration; tpe (Optuna) proposes from the trials so far")
    trials = c2.number_input("Max trials", 1, 500, pb.search.max_trials)
    minutes = c3.number_input("Max minutes", 1.0, 1440.0, float(pb.search.max_minutes),
                              help="no new trial starts after this")
    stop = c3.checkbox("Stop when every gate is met", pb.search.stop_when_met)
    with session_scope() as s:
        live = [w for w in queries.live_workers(s) if ("gpu" if device == "cuda" else "cpu") in (w.queues or [])]
    if live:
        st.caption(f"{len(live)} live worker(s) on this queue: {len(live)} trial(s) at once — "
                   + ", ".join(w.name for w in live))
    else:
        st.warning("No live worker listens on this queue: start one (`make run` starts one; "
                   "`speedbook worker` adds more) before starting a search.")
    if st.button("Start the search", type="primary", disabled=not live):
        try:
            sid = search.start(pb, workload, device, team_id=team_id, strategy=strategy, max_trials=int(trials),
                               max_minutes=float(minutes), stop_when_met=stop)
        except Exception as err:  # bad space, broker down…: the message, never a trace
            st.error(f"Could not start the search: {user_error(err)}")
        else:
            st.session_state.pop("handoff_tune", None)
            st.query_params["search"] = str(sid)
            st.rerun()


def search_list() -> None:
    with session_scope() as s:
        rows = s.query(Search.id, Search.playbook_name, Search.workload, Search.device, Search.status,
                       Search.created_at).filter(Search.team_id == team_id).order_by(Search.id.desc()).limit(50).all()
    if not rows:
        st.caption("No searches yet.")
        return
    data = pd.DataFrame([{"search": r.id, "playbook": r.playbook_name, "workload": r.workload, "device": r.device,
                          "status": r.status, "started": r.created_at.strftime("%Y-%m-%d %H:%M")} for r in rows])
    event = table(data, on_select="rerun", selection_mode="single-row", key="searches_df")
    if event and event.selection.rows:
        st.query_params["search"] = str(rows[event.selection.rows[0]].id)
        st.rerun()


def _cfg(config: dict) -> str:
    return ", ".join(f"{k.split('.', 1)[1]}={v}" for k, v in config.items()) or MISSING


def show(search_id: int) -> str | None:
    """The search's progress, answer, chart and trials; returns its status."""
    with session_scope() as s:
        row = s.get(Search, search_id)
        owner = row.team_id if row else None
    if owner is None:
        st.error(f"Search {search_id} does not exist.")
        return None
    if owner != team_id:
        st.error(f"Search {search_id} belongs to another team.")
        return None
    doc = search.result(search_id)
    running = doc["status"] == "running"
    done = sum(t["status"] not in ("queued", "running") for t in doc["trials"])
    st.subheader(f"Search {search_id}: {doc['playbook']} on {doc['workload']} ({doc['device']})")
    st.progress(min(done / max(doc["max_trials"], 1), 1.0),
                text=f"{done} of at most {doc['max_trials']} trials finished · {doc['status']}"
                     + (f" — {doc['reason']}" if doc["reason"] else ""))
    pick = doc["best"] or doc["closest_miss"]
    if doc["best"]:
        st.success(f"Best configuration meeting every gate: trial {pick['trial']} — {_cfg(pick['config'])}")
    elif pick:
        offs = "; ".join(f"{g['metric']} " + ("not measured" if g["shortfall"] is None else
                                              "met" if g["shortfall"] == 0 else f"off by {g['shortfall']:.1%}")
                         for g in pick["gates"])
        st.warning(f"No trial met every gate yet. Closest miss: trial {pick['trial']} — {_cfg(pick['config'])} ({offs})")
    fig = search_figure(doc)
    if fig is not None:
        st.plotly_chart(fig, width="stretch")
    names = [o["metric"] for o in doc["objectives"]]
    rows = [{"trial": t["trial"], "run": f"/run?run={t['run_id']}", "status": t["status"],
             "gates": "met" if t["meets_gates"] else ("missed" if t["status"] == "succeeded" else MISSING),
             **{f"{n} ×": (abs(t["objectives"][i]) if t["objectives"] else None) for i, n in enumerate(names)},
             "worker": t["worker"] or MISSING, "configuration": _cfg(t["config"]),
             "Pareto": "yes" if t["run_id"] in doc["pareto"] else ""} for t in doc["trials"]]
    if rows:
        table(pd.DataFrame(rows), column_config={"run": st.column_config.LinkColumn("run", display_text=r"run=(\d+)")})
        st.caption("Objectives as measured ratios to each trial's own baseline (lower is better for bytes and "
                   "perplexity, higher for tokens/s).")
    c1, c2 = st.columns(2)
    if running and c1.button("Cancel the search"):
        st.info(search.cancel(search_id))
        st.rerun()
    if pick and c2.button("Save this configuration as a playbook"):
        try:
            pid = search.save_trial_as_playbook(search_id, pick["run_id"], team_id=team_id)
        except Exception as err:
            st.error(f"Could not save it: {user_error(err)}")
        else:
            st.success(f"Saved as playbook #{pid}; it is on the Saved playbooks page and can run from New run.")
    return doc["status"]


selected = st.query_params.get("search")
if selected:
    if not selected.isdigit():
        st.error("The search id in the address must be a number.")
    else:
        with session_scope() as s:
            active = s.query(Search.status).filter(Search.id == int(selected)).scalar() == "running"

        @st.fragment(run_every=poll_interval(active))
        def live() -> None:
            status = show(int(selected))
            repoll_if_changed(active, status == "running")

        live()
    if st.button("New search"):
        del st.query_params["search"]
        st.rerun()
else:
    tab_new, tab_list = st.tabs(["New search", "Searches"])
    with tab_new:
        new_search()
    with tab_list:
        search_list()
