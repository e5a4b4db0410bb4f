"""Plotly figures for the dashboard, the run page and the HTML report, and the dashboard's table
rows. Every figure says whether its numbers are measured; inputs are plain rows from db.dashboard."""
from __future__ import annotations

from typing import Any

import plotly.graph_objects as go

from db.dashboard import PIVOT_METRICS
from optimizers.metrics import spec
from optimizers.stats import is_interval_figure
from ui.format import MIB, column_label, column_value, or_missing, outcome_label, pivot_headline


def quality_loss_pct(row: dict[str, Any]) -> float | None:
    """Quality lost against the run's own baseline, in percent (lower is better):
    perplexity rise, relative accuracy drop, or 1 − embedding cosine."""
    b, f = row.get("baseline_perplexity"), row.get("final_perplexity")
    if b and f is not None:
        return (f / b - 1) * 100
    b, f = row.get("baseline_accuracy"), row.get("final_accuracy")
    if b and f is not None:
        return (b - f) / b * 100
    f = row.get("final_embedding_cosine")
    if f is not None:
        return (1 - f) * 100
    return None


def speedup(row: dict[str, Any]) -> float | None:
    """Baseline latency over final latency: the interleaved interval's ratio where the run has one."""
    if row.get("final_latency_ms_ci_ratio"):
        return 1.0 / row["final_latency_ms_ci_ratio"]
    b, f = row.get("baseline_latency_ms"), row.get("final_latency_ms")
    return b / f if b and f else None


def speedup_interval(row: dict[str, Any]) -> tuple[float | None, float | None]:
    """(low, high) of the speed-up's 95 % interval (None, None without interleaved timing)."""
    lo, hi = row.get("final_latency_ms_ci_low"), row.get("final_latency_ms_ci_high")
    return (1.0 / hi, 1.0 / lo) if lo and hi else (None, None)


def dashboard_row(r: dict[str, Any]) -> dict[str, Any]:
    """A run as the Dashboard's table (and CSV) shows it: outcome and headline first, ratios to its own
    baseline, then the final figures in their columns' units (bytes in MiB); None where a run did not
    measure a figure (the table draws "—")."""
    low, high = speedup_interval(r)
    b, f = r.get("baseline_stored_bytes"), r.get("final_stored_bytes")
    return {
        "id": r["id"], "outcome": outcome_label(r["status"], r["gates_verdict"]), "headline": or_missing(pivot_headline(r)),
        "playbook": r["playbook_name"], "workload": r["workload"], "device": r["device"], "created": r["created_at"],
        "speed-up ×": speedup(r), "speed-up 95 % low": low, "speed-up 95 % high": high,
        "quality loss %": quality_loss_pct(r), "stored ×": f / b if b and f else None,
        **{column_label(m, "final "): column_value(m, r.get(f"final_{m}")) for m in PIVOT_METRICS if not is_interval_figure(m)},
    }


def pareto_front(points: list[tuple[float, float, Any]]) -> list[tuple[float, float, Any]]:
    """Points (speed-up ↑, quality loss ↓, key) not dominated by any other, by speed-up."""
    from playbooks.search import pareto_front as non_dominated

    keep = set(non_dominated({i: [-x, y] for i, (x, y, _) in enumerate(points)}))
    return sorted((p for i, p in enumerate(points) if i in keep), key=lambda p: (p[0], p[1]))


def pareto_figure(rows: list[dict[str, Any]]) -> go.Figure:
    """Quality loss against speed-up, each run against its own baseline, with the speed-up's 95 %
    interval as an error bar; one Pareto front per workload (only comparable runs are joined)."""
    pts = [(speedup(r), quality_loss_pct(r), r) for r in rows]
    pts = [(x, y, r) for x, y, r in pts if x is not None and y is not None]
    fig = go.Figure()
    for workload in sorted({r["workload"] for *_, r in pts}):
        mine = [p for p in pts if p[2]["workload"] == workload]
        lows = [speedup_interval(r) for *_, r in mine]
        fig.add_scatter(
            x=[p[0] for p in mine], y=[p[1] for p in mine], mode="markers+text", name=f"{workload} runs",
            text=[f"run {r['id']}" for *_, r in mine], textposition="top center",
            hovertext=[f"run {r['id']}: {r['playbook_name']} on {r['workload']}" for *_, r in mine], hoverinfo="text+x+y",
            error_x={"type": "data", "symmetric": False,
                     "array": [(hi - x) if hi else 0.0 for (x, _, _), (_, hi) in zip(mine, lows)],
                     "arrayminus": [(x - lo) if lo else 0.0 for (x, _, _), (lo, _) in zip(mine, lows)]},
        )
        front = pareto_front(mine)
        if len(front) > 1:
            fig.add_scatter(x=[p[0] for p in front], y=[p[1] for p in front], mode="lines", name=f"{workload} Pareto front",
                            line={"dash": "dash"})
    fig.update_layout(title="Quality vs speed (measured, each run against its own baseline; error bars: 95 % interval)",
                      xaxis_title="latency speed-up × (baseline / final)", yaxis_title="quality loss % (lower is better)",
                      height=420, margin={"t": 50, "b": 40})
    return fig


def memory_bars(rows: list[dict[str, Any]]) -> go.Figure:
    labels = [f"run {r['id']}" for r in rows]
    fig = go.Figure()
    for key, name in (("baseline_stored_bytes", "stored, baseline"), ("final_stored_bytes", "stored, final"),
                      ("baseline_peak_memory_bytes", "peak, baseline"), ("final_peak_memory_bytes", "peak, final")):
        fig.add_bar(x=labels, y=[None if r.get(key) is None else r[key] / MIB for r in rows], name=name)  # unmeasured: no bar
    fig.update_layout(title="Stored bytes and peak memory (measured, MiB)", barmode="group", yaxis_title="MiB",
                      height=380, margin={"t": 50, "b": 40})
    return fig


GOOD, BAD, NEUTRAL = "#2e7d32", "#c62828", "#9e9e9e"


def direction_colours(better: str) -> tuple[str, str]:
    """(colour of a rise, colour of a fall) for a metric whose ``better`` direction is lower, higher
    or closer to the baseline: a slowdown or a quality loss is never green."""
    if better == "lower":
        return BAD, GOOD
    if better == "higher":
        return GOOD, BAD
    return BAD, BAD  # closer_to_baseline: any move away is the wrong way


def waterfall(deltas: list[dict[str, Any]], metric: str, unit: str = "", better: str | None = None) -> go.Figure:
    """Baseline, then each step's change, ending at the final value; a change coloured by whether it
    is better for this metric (green) or worse (red), from its spec unless ``better`` is given."""
    if not deltas:
        return go.Figure()
    if spec(metric).unit == "B":  # bytes drawn in MiB, like every byte figure on the pages
        deltas, unit = [{**d, "value": d["value"] / MIB} for d in deltas], "MiB"
    measures, ys, prev = ["absolute"], [deltas[0]["value"]], deltas[0]["value"]
    for d in deltas[1:]:
        measures.append("relative")
        ys.append(d["value"] - prev)
        prev = d["value"]
    labels = [d["label"] for d in deltas]
    if len(deltas) > 1:
        measures.append("total")
        ys.append(0)
        labels.append("final")
    rise, fall = direction_colours(better or spec(metric).better)
    fig = go.Figure(go.Waterfall(x=labels, y=ys, measure=measures, increasing={"marker": {"color": rise}},
                                 decreasing={"marker": {"color": fall}}, totals={"marker": {"color": NEUTRAL}}))
    unit = unit or spec(metric).unit
    fig.update_layout(title=f"{spec(metric).label} per step (measured{', ' + unit if unit else ''})", yaxis_title=unit or None,
                      height=360, margin={"t": 50, "b": 40})
    return fig


SERVING_COLUMNS = (("throughput_tokens_per_s", "output tok/s"), ("ttft_ms_p50", "TTFT p50 ms"),
                   ("ttft_ms_p95", "TTFT p95 ms"), ("tpot_ms_p50", "TPOT p50 ms"), ("tpot_ms_p95", "TPOT p95 ms"),
                   ("e2e_ms_p95", "e2e p95 ms"), ("kv_cache_used_fraction", "KV used / reserved"),
                   ("output_exact_fraction", "exact outputs"))


def serving_stages(summary: dict[str, Any]) -> list[tuple[str, dict[str, float]]]:
    """(label, metrics) for the baseline and each measured step of a serving run, in order."""
    out = [("baseline (one at a time)", summary.get("baseline") or {})]
    for i, step in enumerate(summary.get("steps") or [], 1):
        if step.get("metrics") and "throughput_tokens_per_s" in step["metrics"]:
            out.append((f"{i}. {step['technique']}", step["metrics"]))
    return [(label, m) for label, m in out if "throughput_tokens_per_s" in m]


def serving_rows(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """The Run page's serving table: one row per stage, the scenario's headline figures."""
    rows = []
    for label, m in serving_stages(summary):
        row: dict[str, Any] = {"stage": label}
        for key, name in SERVING_COLUMNS:
            v = m.get(key)
            row[name] = None if v is None else (round(v * 100, 1) if key.endswith("fraction") else round(v, 1))
        rows.append(row)
    return rows


def serving_figure(summary: dict[str, Any]) -> go.Figure:
    """Throughput (bars, left axis) and TTFT / TPOT percentiles (markers, right axis) per stage."""
    stages = serving_stages(summary)
    labels = [label for label, _ in stages]
    fig = go.Figure()
    fig.add_bar(x=labels, y=[m["throughput_tokens_per_s"] for _, m in stages], name="output tok/s", yaxis="y")
    for key, name, dash in (("ttft_ms_p50", "TTFT p50", "solid"), ("ttft_ms_p95", "TTFT p95", "dot"),
                            ("tpot_ms_p50", "TPOT p50", "solid"), ("tpot_ms_p95", "TPOT p95", "dot")):
        fig.add_scatter(x=labels, y=[m.get(key) for _, m in stages], name=f"{name} ms", yaxis="y2",
                        mode="lines+markers", line={"dash": dash})
    fig.update_layout(title="Serving the trace (measured): throughput and latency percentiles per step",
                      yaxis={"title": "output tokens/s"},
                      yaxis2={"title": "ms (log)", "overlaying": "y", "side": "right", "type": "log"},
                      height=420, margin={"t": 50, "b": 40}, legend={"orientation": "h"})
    return fig


TRAIN_MEMORY_PARTS = (("train_memory_params_bytes", "parameters"), ("train_memory_grads_bytes", "gradients"),
                      ("train_memory_optimizer_bytes", "optimizer states"),
                      ("train_memory_activations_bytes", "activations"))


def training_stages(summary: dict[str, Any]) -> list[tuple[str, dict[str, float], list[float]]]:
    """(label, metrics, loss curve) for the baseline and every step the training scenario measured."""
    env = summary.get("environment") or {}
    out = []
    if summary.get("baseline"):
        out.append(("baseline", summary["baseline"], (env.get("baseline_details") or {}).get("loss_curve") or []))
    for i, step in enumerate(summary.get("steps") or [], 1):
        if step.get("metrics") and "train_step_ms" in step["metrics"]:
            out.append((f"{i}. {step['technique']}", step["metrics"], (step.get("details") or {}).get("loss_curve") or []))
    return out


def loss_curves_figure(summary: dict[str, Any]) -> go.Figure:
    """The training loss per optimizer step, baseline and each step on the same batches."""
    fig = go.Figure()
    for label, _, curve in training_stages(summary):
        if curve:
            fig.add_scatter(x=list(range(1, len(curve) + 1)), y=curve, mode="lines+markers", name=label)
    fig.update_layout(title="Training loss per step (measured; every recipe trains the same batches)",
                      xaxis={"title": "optimizer step"}, yaxis={"title": "loss"}, height=380,
                      margin={"t": 50, "b": 40}, legend={"orientation": "h"})
    return fig


def training_memory_figure(summary: dict[str, Any]) -> go.Figure:
    """Peak training memory split by kind (stacked), per recipe."""
    stages = training_stages(summary)
    labels = [label for label, _, _ in stages]
    fig = go.Figure()
    for key, name in TRAIN_MEMORY_PARTS:
        fig.add_bar(x=labels, y=[m.get(key, 0) / MIB for _, m, _ in stages], name=name)
    est = [m.get("estimated_train_memory_bytes") for _, m, _ in stages]
    if any(e is not None for e in est):
        fig.add_scatter(x=labels, y=[e / MIB if e else None for e in est], mode="markers", name="estimator (computed)",
                        marker={"symbol": "x", "size": 11})
    fig.update_layout(barmode="stack", title="Training memory by kind (measured, torch's accounting) and the estimate",
                      yaxis={"title": "MiB"}, height=400, margin={"t": 50, "b": 40}, legend={"orientation": "h"})
    return fig


STEP_CHART_METRICS = ("stored_bytes", "perplexity", "accuracy", "pair_spearman", "latency_ms", "decode_tokens_per_s")


def step_ratio_figure(summary: dict[str, Any]) -> go.Figure | None:
    """Each measured step's key metrics as a ratio to the baseline (1 = unchanged), one bar group per
    step; a timed metric's bar carries its 95 % interval (interleaved with the baseline) as an error
    bar. None when no step has figures."""
    from optimizers import stats

    base = summary.get("baseline") or {}
    steps = [(f"{i}. {st['technique']}", st["metrics"]) for i, st in enumerate(summary.get("steps") or [], 1)
             if st.get("metrics")]
    if not steps or not base:
        return None
    fig = go.Figure()
    for name in STEP_CHART_METRICS:
        if not base.get(name):
            continue
        xs, ys, up, down = [], [], [], []
        for label, m in steps:
            iv = stats.stored_interval(m, name)
            if iv is not None:
                xs.append(label), ys.append(iv.ratio), up.append(iv.high - iv.ratio), down.append(iv.ratio - iv.low)
            elif m.get(name) is not None:
                xs.append(label), ys.append(m[name] / base[name]), up.append(0.0), down.append(0.0)
        if xs:
            fig.add_bar(x=xs, y=ys, name=f"{spec(name).label} ({spec(name).better} is better)",
                        error_y={"type": "data", "symmetric": False, "array": up, "arrayminus": down})
    fig.add_hline(y=1.0, line_dash="dot", annotation_text="baseline")
    fig.update_layout(title="Each step against the baseline (measured; error bars: 95 % interval of timed ratios)",
                      barmode="group", yaxis_title="× baseline", height=380, margin={"t": 50, "b": 40})
    return fig


def search_figure(doc: dict[str, Any]) -> go.Figure | None:
    """A search's trials on its first two objectives (ratios to each trial's own baseline, lower
    better after the sign), gate-meeting trials apart from misses, the Pareto front joined, and
    the answer (best, or the closest miss) ringed. None until two objectives are measured."""
    names = [o["metric"] for o in doc["objectives"]]
    pts = [t for t in doc["trials"] if t["objectives"] is not None]
    if not pts:
        return None
    xi, yi = (0, 1) if len(names) > 1 else (0, None)

    def coord(t: dict[str, Any], i: int | None) -> float:
        return float(t["trial"]) if i is None else abs(t["objectives"][i])

    fig = go.Figure()
    for meets, label, symbol in ((True, "meets every gate", "circle"), (False, "misses a gate", "x")):
        mine = [t for t in pts if t["meets_gates"] == meets]
        if mine:
            fig.add_scatter(x=[coord(t, xi) for t in mine], y=[coord(t, yi) for t in mine], mode="markers+text",
                            name=label, marker={"symbol": symbol, "size": 10}, text=[f"#{t['trial']}" for t in mine],
                            textposition="top center",
                            hovertext=[f"trial {t['trial']} (run {t['run_id']}): " + ", ".join(
                                f"{k.split('.', 1)[1]}={v}" for k, v in t["config"].items()) for t in mine],
                            hoverinfo="text+x+y")
    front = sorted((t for t in pts if t["run_id"] in doc["pareto"]), key=lambda t: coord(t, xi))
    if len(front) > 1 and yi is not None:
        fig.add_scatter(x=[coord(t, xi) for t in front], y=[coord(t, yi) for t in front], mode="lines",
                        name="Pareto front", line={"dash": "dash"})
    pick = doc["best"] or doc["closest_miss"]
    chosen = next((t for t in pts if pick and t["run_id"] == pick["run_id"]), None)
    if chosen is not None:
        fig.add_scatter(x=[coord(chosen, xi)], y=[coord(chosen, yi)], mode="markers",
                        name="best" if doc["best"] else "closest miss",
                        marker={"symbol": "star", "size": 22, "color": "gold", "line": {"width": 1, "color": "black"}})
    fig.update_layout(title="Trials (measured; each against its own baseline)", height=420, margin={"t": 50, "b": 40},
                      xaxis_title=f"{names[xi]} × baseline", yaxis_title=f"{names[yi]} × baseline" if yi is not None else "trial")
    return fig
