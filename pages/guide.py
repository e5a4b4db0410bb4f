"""Guide: a four-step wizard (goal → model → hardware → priorities and tolerance) that walks
the taxonomy's decision guide to ranked playbooks, with reasons, warnings, per-step verdicts
and estimated memory before/after. "Run this playbook" hands it to New run; "Save" stores it."""
import typing

import plotly.graph_objects as go
import streamlit as st

from db import queries
from db.session import session_scope
from playbooks import constraints as C
from playbooks import specs
from playbooks.guide import recommend
from ui.format import human_bytes, md_escape, or_missing, user_error
from ui.state import page_ready
from ui.tables import table
from ui.team import current_team_id

page_ready()
st.title("🧭 Guide")
st.caption("State your constraints; Speedbook walks the taxonomy's decision guide to a playbook. Figures here are estimated.")

STEPS = ["Goal", "Model", "Hardware", "Priorities"]
step = st.session_state.setdefault("guide_step", 0)
st.progress((step + 1) / len(STEPS), text=f"Step {step + 1} of {len(STEPS)}: {STEPS[step]}")
c = st.session_state.setdefault("guide", {"goal": "serve", "model": "Llama-3.1-8B", "gpu": "H100", "count": 1,
                                          "priority": "throughput", "accuracy_tolerance": "small", "context_length": 8192,
                                          "concurrency": 8, "data": "calibration", "runtime": "any"})


SERVING_GOALS = ("serve", "edge")


def _asked(c: dict) -> tuple[str, ...]:
    """The sequence figures this goal's estimate uses for this model: a served LLM's context and
    concurrency (its KV cache), a trained transformer's sequence length; none for a CNN."""
    if isinstance(c["model"], dict):  # described by its shapes: a decoder LLM
        kind = "llm"
    else:
        try:
            kind = specs.get_model(c["model"]).kind
        except ValueError:
            return ("context_length", "concurrency")
    if kind == "cnn":
        return ()
    if c["goal"] in SERVING_GOALS:
        return ("context_length", "concurrency") if kind == "llm" else ()
    return ("context_length",)


CUSTOM_DEFAULTS = {"family": "llama", "params_b": 7.0, "layers": 32, "hidden": 4096, "heads": 32, "kv_heads": 8,
                   "vocab": 128_256, "context": 8192}


def custom_model(current: dict) -> dict:
    """A model not in the table, by the shapes the estimator needs; refused here, naming the
    field, when they cannot be a transformer (hidden not a multiple of heads…)."""
    m = {**CUSTOM_DEFAULTS, **current}
    cols = st.columns(4)
    m["family"] = cols[0].text_input("Family", m["family"], key="g_c_family", help="architecture family, e.g. llama").strip()
    m["params_b"] = float(cols[1].number_input("Parameters (billions)", 0.001, 10_000.0, float(m["params_b"]), key="g_c_params"))
    m["layers"] = int(cols[2].number_input("Layers", 1, 1_000, int(m["layers"]), key="g_c_layers"))
    m["hidden"] = int(cols[3].number_input("Hidden size", 1, 1_000_000, int(m["hidden"]), key="g_c_hidden"))
    m["heads"] = int(cols[0].number_input("Attention heads", 1, 10_000, int(m["heads"]), key="g_c_heads"))
    m["kv_heads"] = int(cols[1].number_input("K/V heads (GQA)", 1, 10_000, int(m["kv_heads"]), key="g_c_kv"))
    m["vocab"] = int(cols[2].number_input("Vocabulary", 1, 10_000_000, int(m["vocab"]), key="g_c_vocab"))
    m["context"] = int(cols[3].number_input("Max context (tokens)", 1, 100_000_000, int(m["context"]), key="g_c_ctx"))
    try:
        C.CustomModel(**m)
    except ValueError as err:
        st.error(f"These shapes cannot be a transformer: {user_error(err)}")
    else:
        st.caption("Estimated from these shapes: the parameter count is yours, the KV cache follows layers × K/V heads.")
    return m


def _choice(label: str, key: str, options: list[str], **kw) -> None:
    c[key] = st.radio(label, options, index=options.index(c[key]), horizontal=True, key=f"g_{key}", **kw)


if step == 0:
    _choice("What do you do with the model?", "goal", list(typing.get_args(C.Goal)),
            help="pretrain / finetune: training memory and speed; serve: inference at scale; edge: on-device")
elif step == 1:
    how = st.radio("Your model", ["From the table", "Describe its shapes"], horizontal=True, key="g_model_how",
                   index=1 if isinstance(c["model"], dict) else 0)
    if how == "From the table":
        names = specs.model_names()
        current = c["model"] if isinstance(c["model"], str) else None
        c["model"] = st.selectbox("Model", names, index=names.index(current) if current in names else 0, key="g_model")
        st.caption("Configs from the models' published config files; parameter counts are computed from them.")
    else:
        c["model"] = custom_model(c["model"] if isinstance(c["model"], dict) else {})
elif step == 2:
    hw = specs.hardware_names()
    c["gpu"] = st.selectbox("Hardware", hw, index=hw.index(c["gpu"]), key="g_gpu")
    if c["gpu"] != "CPU":
        c["count"] = int(st.number_input("GPU count", min_value=1, max_value=1024, value=int(c["count"]), key="g_count"))
else:
    _choice("What matters most?", "priority", list(typing.get_args(C.Priority)))
    _choice("Accuracy tolerance", "accuracy_tolerance", list(typing.get_args(C.Tolerance)),
            help="lossless never yields a lossy step")
    asks = _asked(c)
    cols = st.columns(2)
    if "context_length" in asks:
        label = "Context length (tokens)" if c["goal"] in SERVING_GOALS else "Training sequence length (tokens)"
        c["context_length"] = int(cols[0].number_input(label, 1, 10_000_000, int(c["context_length"]), key="g_ctx"))
    if "concurrency" in asks:
        c["concurrency"] = int(cols[1].number_input("Concurrent requests", 1, 100_000, int(c["concurrency"]), key="g_conc"))
    if not asks:
        st.caption("Context length and concurrency do not enter this goal's estimate for this model; not asked.")
    _choice("Data you can use", "data", list(typing.get_args(C.Data)))
    _choice("Runtime", "runtime", list(typing.get_args(C.Runtime)))

b1, b2, _ = st.columns([1, 1, 4])
if b1.button("Back", disabled=step == 0):
    st.session_state["guide_step"] = step - 1
    st.rerun()
if step < len(STEPS) - 1 and b2.button("Next", type="primary"):
    st.session_state["guide_step"] = step + 1
    st.rerun()
if step == len(STEPS) - 1 and b2.button("Recommend", type="primary"):
    st.session_state["guide_done"] = True

if not st.session_state.get("guide_done"):
    st.stop()

doc = {k: c[k] for k in ("goal", "model", "priority", "accuracy_tolerance", "data", "runtime", *_asked(c))}
doc["hardware"] = {"cpu": True} if c["gpu"] == "CPU" else {"gpu": c["gpu"], "count": c["count"]}
try:
    recs = recommend(doc, limit=5)
except ValueError as err:
    st.error(user_error(err))
    st.stop()
if not recs:
    st.warning("No playbook in the library serves these constraints. Try a looser accuracy tolerance or another goal.")
    st.stop()

st.header("Recommended playbooks")
with session_scope() as s:
    workers = queries.live_workers(s)
for rank, rec in enumerate(recs, 1):
    d = rec.to_dict()
    with st.container(border=True):
        st.subheader(f"{rank}. {md_escape(d['title'])}")
        st.caption(f"`{d['playbook']}` · score {d['score']:.2f} (computed by the guide's matching rules)")
        table([{"step": i + 1, "technique": s_["technique"], "verdict": or_missing(s_["verdict"]),
                "params": or_missing(str(s_["params"] or ""))} for i, s_ in enumerate(d["steps"])])
        with st.expander("Why this playbook", expanded=rank == 1):
            for reason in d["reasons"]:
                st.text(f"• {reason}")
        for warning in d["warnings"]:
            st.warning(warning)
        est = d["estimates"]
        assumed = [f"{est['count']}× {est['hardware']}"]
        if "context_length" in _asked(c):
            assumed.append(f"{est['context_length']:,}-token {'context' if c['goal'] in SERVING_GOALS else 'sequences'}")
        if "concurrency" in _asked(c):
            assumed.append(f"{est['concurrency']} concurrent requests")
        setup = est.get("assumes") or {}
        if "method" in setup:  # what the training estimate assumes after the playbook's steps
            assumed.append(f"{setup['method']} with {setup['optimizer']}, activation checkpointing "
                           f"{'on' if setup['activation_checkpointing'] else 'off'}"
                           + (f", ZeRO stage {setup['zero_stage']}" if setup["zero_stage"] else ""))
        st.caption("The estimate assumes " + ", ".join(assumed) + ".")
        per = est.get("per_step", [])
        if per:
            fig = go.Figure()
            labels = ["before"] + [f"{i + 1}. {p['technique']}" for i, p in enumerate(per)]
            for key, name in (("estimated_weight_bytes", "weights"), ("estimated_kv_cache_bytes", "KV cache")):
                vals = [est["before"].get(key, 0)] + [p.get(key, 0) for p in per]
                if any(vals):
                    fig.add_bar(x=labels, y=[v / 2**30 for v in vals], name=name)
            fig.update_layout(title="Memory per step (estimated, GiB)", barmode="stack", height=320, margin={"t": 40, "b": 30})
            st.plotly_chart(fig, key=f"mem{rank}")
            b, a = est["before"], est["after"]
            st.caption(
                f"Estimated weights {human_bytes(b.get('estimated_weight_bytes', 0))} → {human_bytes(a.get('estimated_weight_bytes', 0))}"
                + (f"; decode bound {b['estimated_decode_tokens_per_s_bound']:.0f} → {a['estimated_decode_tokens_per_s_bound']:.0f} tok/s"
                   if b.get("estimated_decode_tokens_per_s_bound") and a.get("estimated_decode_tokens_per_s_bound") else "")
            )
        pb = rec.to_playbook()
        k1, k2, k3 = st.columns(3)
        if k1.button("Run this playbook", key=f"run_{rank}", type="primary" if rank == 1 else "secondary"):
            st.session_state["handoff_playbook"] = pb.to_yaml()
            st.session_state["handoff_playbook_id"] = st.session_state.get(f"saved_{d['playbook']}")  # link runs to a saved copy
            st.switch_page("pages/new_run.py")
        if k2.button("Save", key=f"save_{rank}"):
            with session_scope() as s:
                saved = queries.save_playbook(s, name=pb.name, title=pb.title, yaml_text=pb.to_yaml(),
                                              team_id=current_team_id(), origin="guide")
            st.session_state[f"saved_{d['playbook']}"] = saved.id
            st.success(f"Saved as playbook #{saved.id}; find it under Saved playbooks.")
        if k3.button("Tune this", key=f"tune_{rank}", help="vary its parameters on the workers until its gates are met"):
            st.session_state["handoff_tune"] = pb.to_yaml()
            st.switch_page("pages/search.py")
