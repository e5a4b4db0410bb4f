"""Formatting of figures for people: bytes, ratios, durations, status badges. Pure functions."""
from __future__ import annotations

import datetime as dt
import re
from typing import Any

from optimizers.metrics import spec
from playbooks.estimate import human_bytes  # noqa: F401  (the one definition; pages import it from here)

STATUS_ICON = {
    "queued": "⏳", "running": "🏃", "succeeded": "✅", "failed": "❌", "cancelled": "🚫", "timed_out": "⌛",
    "pending": "·", "skipped": "⏭️", "not run": "○",
}


def headline(baseline: dict[str, Any], final: dict[str, Any]) -> str:
    """A run's result in one line, e.g. "bytes ×0.27 vs 16-bit · perplexity +1.5 % · decode ×2.6 [2.4–2.8]":
    stored bytes against a 16-bit copy, the quality change, and the speed change with its interval
    (interleaved with the baseline) where it has one. Empty for a run with no final figures."""
    from optimizers import stats

    if not final:
        return ""
    parts = []
    if final.get("stored_bytes_vs_16bit") is not None:
        parts.append(f"bytes ×{final['stored_bytes_vs_16bit']:.2f} vs 16-bit")
    for name, label, points in (("perplexity", "perplexity", False), ("accuracy", "accuracy", True),
                                ("pair_spearman", "Spearman", True)):
        b, v = baseline.get(name), final.get(name)
        if b is not None and v is not None:
            parts.append(f"{label} {(v - b) * 100:+.1f} points" if points else f"{label} {delta_text(name, b, v, 1)}")
            break
    for name, label in (("decode_tokens_per_s", "decode"), ("latency_ms", "latency")):
        iv = stats.stored_interval(final, name)
        if iv is not None:
            parts.append(f"{label} {iv.text()}")
            break
        b, v = baseline.get(name), final.get(name)
        if b and v is not None:
            parts.append(f"{label} ×{v / b:.2f} (no interval)")
            break
    return " · ".join(parts)


def pivot_headline(row: dict[str, Any]) -> str:
    """``headline`` of a dashboard row (its baseline_* / final_* pivot columns)."""
    pick = lambda phase: {k[len(phase) + 1:]: v for k, v in row.items() if k.startswith(f"{phase}_") and v is not None}  # noqa: E731
    return headline(pick("baseline"), pick("final"))


ENDED_EARLY = ("failed", "cancelled", "timed_out")


def step_status(run_status: str, step_status: str) -> str:
    """A step's status as people read it: a step the run never reached (after a failure or a
    cancel) is "not run", not "pending"."""
    if step_status in ("pending", "queued", "running") and run_status in ENDED_EARLY:
        return "not run"
    return step_status


def outcome_label(status: str, gates_verdict: str | None) -> str:
    """How a run ended, first: a run that executed but missed its gates is not shown as a success."""
    if status != "succeeded":
        return f"{STATUS_ICON.get(status, '')} {status}"
    return {"passed": "✅ gates passed", "missed": "❌ gates missed"}.get(gates_verdict or "",
                                                                        "☑️ succeeded, gates not checked")


MISSING = "—"  # a missing value in every table and line of every page: never None, nan or an empty cell


def or_missing(value: Any) -> Any:
    """A table cell as shown: the value, or "—" where there is none (None, NaN, empty text)."""
    if value is None or value == "" or (isinstance(value, float) and value != value):
        return MISSING
    return value


MIB = 2**20


def column_label(name: str, prefix: str = "") -> str:
    """A numeric column's header with its unit, bytes in MiB (binary prefix, as ``human_bytes``):
    "final stored bytes (MiB)", "final latency (median) (ms)"."""
    unit = {"B": "MiB", "×": ""}.get(spec(name).unit, spec(name).unit)
    return f"{prefix}{spec(name).label}" + (f" ({unit})" if unit else "")


def column_value(name: str, value: float | None) -> float | None:
    """A figure in its column's unit (``column_label``): bytes as MiB, the rest as stored. It stays a
    number, so the column sorts; the table shows "—" where it is None."""
    if value is None or value != value:
        return None
    return value / MIB if spec(name).unit == "B" else value


def param_default(field: Any) -> str:
    """A config field's default as a parameter table shows it: its repr, or "—" where there is none
    (None means "decided at run time", and the description says how)."""
    if field.is_required():
        return "required"
    default = field.get_default(call_default_factory=True)
    return MISSING if default is None else repr(default)


def fmt_value(name: str, value: float | None) -> str:
    if value is None or value != value:
        return MISSING
    unit = spec(name).unit
    if unit == "B":
        return human_bytes(value)
    if abs(value) >= 1000:
        text = f"{value:,.0f}"
    elif abs(value) >= 1:
        text = f"{value:.3f}"
    else:
        text = f"{value:.4g}"
    return f"{text} {unit}".strip()


def ratio(base: float | None, value: float | None) -> float | None:
    if base in (None, 0) or value is None:
        return None
    return value / base


NEAR_ZERO = 1e-9


def delta_text(name: str, ref: float | None, value: float | None, decimals: int = 2) -> str:
    """The change from ``ref`` as a percentage, or as an absolute difference (with its unit) when the
    reference is (near) zero, where a percentage would be meaningless."""
    if ref is None or value is None:
        return ""
    if abs(ref) <= NEAR_ZERO * max(abs(value), 1.0):
        return "±0" if value == ref else f"{'+' if value > ref else '−'}{fmt_value(name, abs(value - ref))} (reference ≈ 0)"
    pct = (value - ref) / abs(ref) * 100
    return f"±{0:.{decimals}f} %" if round(pct, decimals) == 0 else f"{pct:+.{decimals}f} %"


def duration(start: dt.datetime | None, end: dt.datetime | None) -> str:
    if start is None:
        return MISSING
    return duration_s(((end or dt.datetime.utcnow()) - start).total_seconds())


def duration_s(secs: float) -> str:
    return f"{secs:.0f} s" if secs < 120 else f"{secs / 60:.1f} min"


def ratio_text(name: str, metrics: dict[str, Any], r: float | None) -> str:
    """A step's ratio to the baseline: a timed metric with its interleaved interval and verdict
    ("×0.42 [0.40–0.45] faster"), rounded to what the interval resolves; else the plain ratio."""
    from optimizers import stats

    iv = stats.stored_interval(metrics, name)
    if iv is not None:
        rate = spec(name).better == "higher"  # a rate: above 1 is faster
        verdict = {"faster": "slower", "slower": "faster"}.get(iv.verdict, iv.verdict) if rate else iv.verdict
        return f"{iv.text()} {verdict}"
    return f"×{r:.3f}" if r is not None else ""


def metric_rows(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per metric: baseline, each step's value and its ratio to the baseline (a timed
    metric's with its interval: the interval figures themselves are no rows of their own)."""
    from optimizers.stats import is_interval_figure

    base = summary["baseline"]
    names = [n for n in list(base) + sorted({k for st in summary["steps"] for k in st["metrics"] if k not in base})
             if not is_interval_figure(n)]
    rows = []
    for name in names:
        row: dict[str, Any] = {"metric": spec(name).label, "baseline": fmt_value(name, base.get(name))}  # values carry their unit
        for i, st in enumerate(summary["steps"]):
            if not st["metrics"]:
                continue  # skipped (advice-only / needs GPU) or not reached: listed under Steps instead
            v = st["metrics"].get(name)
            r = ratio(base.get(name), v)
            label = f"{i + 1}. {st['technique']}"
            row[label] = fmt_value(name, v) if v is not None else (
                MISSING if st["status"] == "succeeded" else step_status(summary.get("status", ""), st["status"]))
            row[f"{label} ×"] = ratio_text(name, st["metrics"], r) or MISSING
        rows.append(row)
    return rows


_MD_SPECIAL = "\\`*_{}[]<>()#+-.!|~$"
_ZWSP = "\u200b"
# GitHub-flavoured markdown turns bare URLs and e-mail addresses into links even when every
# punctuation character is escaped; an invisible zero-width space breaks each trigger
_AUTOLINK = re.compile(r"(?i)(?<=[a-z0-9])(?=://)|(?<=www)(?=\.)|(?=@)")


def md_escape(text: str) -> str:
    """Escape user text for Streamlit markdown (titles, headers, alerts), so names like
    ``<img src=x onerror=…>``, ``![x](http://…)`` or ``**bold**`` show exactly those characters
    and no URL or address in it becomes a link."""
    text = _AUTOLINK.sub(_ZWSP, str(text))
    return "".join("\\" + c if c in _MD_SPECIAL else c for c in text)


def user_error(err: BaseException) -> str:
    """What a page shows for an exception: a bad-input message as written (escaped), never a
    database statement or its parameters, never a traceback; the details go to the server log."""
    import logging

    from sqlalchemy.exc import SQLAlchemyError

    if isinstance(err, ValueError) and not isinstance(err, SQLAlchemyError):
        return md_escape(str(err))
    logging.getLogger("speedbook.ui").error("page error", exc_info=err)
    if isinstance(err, SQLAlchemyError):
        return "The database refused the request; the server log has the details."
    return md_escape(f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else 'see the server log'}")
