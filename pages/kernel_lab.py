"""Kernel lab: pick a Triton kernel and a shape, send it to a GPU worker for timing against the
device's measured roofline, or to a CPU worker for a correctness check under Triton's interpreter."""
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from db import queries
from db.session import session_scope
from jobs import kernel_lab
from kernels import KERNELS
from ui.format import or_missing, user_error
from ui.state import page_ready
from ui.tables import table
from ui.team import current_team_id

page_ready()
st.title("🧪 Kernel lab")
st.caption("GPU rows are timed (CUDA events, median) and placed under the device's measured ceilings; "
           "CPU rows run in Triton's interpreter and check correctness only — their times are not speed figures.")
team_id = current_team_id()

c1, c2, c3 = st.columns(3)
kernel = c1.selectbox("Kernel", list(KERNELS))
dtype = c2.selectbox("dtype", kernel_lab.DTYPES, index=1)
with session_scope() as s:
    live = queries.live_workers(s)
has_gpu_worker = any("gpu" in (w.queues or []) for w in live)
device = c3.selectbox("Device", ["cuda", "cpu"], index=0 if has_gpu_worker else 1,
                      help="cuda: timing on a GPU worker; cpu: interpreter correctness check "
                           "(preselected: a device with a live worker)")
defaults = kernel_lab.bench_params(kernel)
small = device == "cpu"
cols = st.columns(max(len(defaults), 1))
params = {}
for col, (name, default) in zip(cols, defaults.items()):
    if isinstance(default, bool):
        params[name] = col.checkbox(name, value=default, key=f"k_{kernel}_{name}")
    elif isinstance(default, int):
        start = min(default, 64) if small and name not in ("group_size", "d") else default
        params[name] = int(col.number_input(name, min_value=1, value=start, key=f"k_{kernel}_{name}_{device}"))
workers = [w for w in live if ("gpu" if device == "cuda" else "cpu") in (w.queues or [])]
if not workers:
    st.warning(f"No live worker on the {'gpu' if device == 'cuda' else 'cpu'} queue; the request will wait for one.")
if st.button("Run", type="primary"):
    try:
        bench_id = kernel_lab.submit(kernel, params, dtype, device, team_id=team_id)
    except ValueError as err:
        st.error(user_error(err))
    except Exception as err:
        st.error(f"Could not submit: {user_error(err)}")
    else:
        st.success(f"Queued kernel benchmark #{bench_id}.")


@st.fragment(run_every=3)
def results() -> None:
    rows = kernel_lab.recent(team_id)
    if not rows:
        st.info("No kernel results yet.")
        return
    results_df = pd.DataFrame([
        {"id": r["id"], "kernel": r["kernel"], "shape": r["shape"], "dtype": r["dtype"], "device": r.get("device"),
         "mode": r["mode"], "status": r["status"], "ms": r.get("ms") if r["mode"] == "bench" else None,
         "GB/s": r.get("gb_per_s") if r["mode"] == "bench" else None,
         "TFLOP/s": r.get("tflop_per_s") if r["mode"] == "bench" else None,
         "% of roofline": r.get("pct_of_roofline"), "bound": r.get("bound"),
         "max |err|": r.get("max_abs_err"), "eager max |err|": r.get("eager_max_abs_err"), "within bound": r.get("bound_ok"),
         "error": or_missing(r.get("error"))}
        for r in rows
    ])
    st.subheader("Results (measured)")
    table(results_df)  # a figure a mode does not measure (a CPU check's GB/s) is "—"
    queued = [r["id"] for r in rows if r["status"] == "queued"]
    if queued:
        q1, q2 = st.columns([3, 1])
        pick = q1.selectbox("Queued request", queued, format_func=lambda i: f"#{i}", key="kl_cancel_pick")
        if q2.button("Cancel it", key="kl_cancel"):
            st.toast(kernel_lab.cancel(pick, team_id))
    timed = [r for r in rows if r["mode"] == "bench" and r["status"] == "succeeded" and r.get("ceilings")]
    if timed:
        c = timed[0]["ceilings"]
        fig = go.Figure()
        xs = [2 ** i for i in range(-4, 12)]
        peak = c["matmul_tflop_per_s"]["bf16"] * 1e3  # GFLOP/s
        fig.add_scatter(x=xs, y=[min(peak, x * c["copy_gb_per_s"]) for x in xs], mode="lines", name="roofline (measured ceilings)")
        fig.add_scatter(x=[r["intensity_flop_per_byte"] for r in timed], y=[r["tflop_per_s"] * 1e3 for r in timed],
                        mode="markers+text", text=[f"{r['kernel']}" for r in timed], name="kernels")
        fig.update_layout(xaxis_type="log", yaxis_type="log", xaxis_title="FLOP / byte", yaxis_title="GFLOP/s",
                          title=f"Roofline of {c.get('device', 'the GPU')} (bf16 peak, copy bandwidth)", height=420)
        st.plotly_chart(fig)
    ceil = kernel_lab.stored_ceilings()
    if ceil:
        st.caption("Stored device ceilings (measured once per device)")
        table(pd.DataFrame(ceil))


results()
