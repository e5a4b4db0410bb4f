"""A step's diagnostics on the Run page: the scalars it computed while applying (GPTQ's mean
layer error, AWQ's chosen α, LLM.int8's outlier fraction, QAT's loss, compile time) and its
structured details — a per-layer table drawn as bars, a curve drawn as a line, the settings it
added. Every figure here was computed by the step itself, and the caption says so."""
from __future__ import annotations

from typing import Any

import plotly.graph_objects as go
import streamlit as st

from optimizers.metrics import spec
from ui.format import fmt_value, md_escape
from ui.tables import table


def per_layer(details: dict[str, Any]) -> dict[str, dict[str, float]]:
    """The details that are {layer: number} tables (GPTQ error, AWQ α, outlier fractions)."""
    return {k: v for k, v in details.items()
            if isinstance(v, dict) and v and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v.values())}


def curves(details: dict[str, Any]) -> dict[str, list[float]]:
    """The details that are sequences of numbers (a training loss per step)."""
    return {k: v for k, v in details.items()
            if isinstance(v, list) and len(v) > 1 and all(isinstance(x, (int, float)) for x in v)}


def layer_figure(name: str, table: dict[str, float]) -> go.Figure:
    fig = go.Figure(go.Bar(x=list(table), y=list(table.values())))
    fig.update_layout(title=f"{name.replace('_', ' ')} per layer (computed by the step)", height=280,
                      margin=dict(l=10, r=10, t=40, b=10), xaxis=dict(showticklabels=len(table) <= 24))
    return fig


CURVE_NAMES = {"loss_curve": "this step's training", "control_loss_curve": "the same student without the teacher"}


def curve_figure(series: dict[str, list[float]]) -> go.Figure:
    """Every curve of a step on one chart (a distillation's loss beside its control's)."""
    fig = go.Figure([go.Scatter(x=list(range(1, len(v) + 1)), y=v, mode="lines+markers",
                                name=CURVE_NAMES.get(k, k.replace("_", " "))) for k, v in series.items()])
    title = next(iter(series)).replace("_", " ") if len(series) == 1 else "training loss per step"
    fig.update_layout(title=f"{title} (computed by the step)", height=260, margin=dict(l=10, r=10, t=40, b=10),
                      xaxis_title="step", showlegend=len(series) > 1)
    return fig


def step_diagnostics(step: dict[str, Any], key: str) -> None:
    diag, details = step.get("diagnostics") or {}, step.get("details") or {}
    if not diag and not details:
        return
    with st.expander("Diagnostics (computed by the step while applying)"):
        if diag:
            table([{"figure": spec(k).label, "value": fmt_value(k, v)} for k, v in diag.items()])  # the value carries its unit
        for name, layers in per_layer(details).items():
            st.plotly_chart(layer_figure(name, layers), key=f"{key}-{name}")
        if series := curves(details):
            st.plotly_chart(curve_figure(series), key=f"{key}-curves")
        if details.get("settings"):
            st.caption("settings this step adds to the scenario: " + md_escape(str(details["settings"])))
        for path in details.get("artifacts") or []:
            st.caption(f"wrote {md_escape(str(path))}")
