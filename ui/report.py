"""One run as a self-contained HTML report (charts inline, no network needed to view it).
All user text is HTML-escaped."""
from __future__ import annotations

import html
from typing import Any

from ui.charts import waterfall
from ui.format import headline, metric_rows, or_missing, outcome_label, step_status


def run_report_html(summary: dict[str, Any], deltas: dict[str, list[dict[str, Any]]]) -> str:
    esc = html.escape
    rows = metric_rows(summary)
    head = "".join(f"<th>{esc(str(k))}</th>" for k in (rows[0] if rows else {}))
    body = "".join("<tr>" + "".join(f"<td>{esc(str(v))}</td>" for v in r.values()) + "</tr>" for r in rows)
    figs, first = [], True
    for metric, d in deltas.items():
        if len(d) > 1:
            figs.append(waterfall(d, metric).to_html(full_html=False, include_plotlyjs="inline" if first else False))
            first = False
    steps = "".join(
        f"<li>{esc(st['technique'])} {esc(str(st['params'] or ''))} — {esc(step_status(summary['status'], st['status']))}"
        + (f" <em>{esc(st['error'])}</em>" if st.get("error") else "") + "</li>"
        for st in summary["steps"]
    )
    gates = "".join(f"<li>{'—' if g['ok'] is None else ('✅' if g['ok'] else '⚠️')} {esc(g['detail'])}</li>" for g in summary.get("gates", []))
    env = esc(", ".join(f"{k}={or_missing(v)}" for k, v in summary.get("environment", {}).items()))
    return f"""<!doctype html><html><head><meta charset="utf-8">
<title>Speedbook run {summary['run_id']}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:4px 8px;font-size:13px}}</style>
</head><body>
<h1>Run {summary['run_id']}: {esc(summary['playbook'])}</h1>
<p style="font-size:1.2em"><b>{esc(outcome_label(summary['status'], summary.get('gates_verdict')))}</b>
{esc(' · ' + headline(summary['baseline'], summary['final'])) if summary.get('final') else ''}</p>
<p>{esc(summary['workload'])} on {esc(summary['device'])} — status <b>{esc(summary['status'])}</b></p>
{f"<p><b>Error:</b> {esc(summary['error'])}</p>" if summary.get('error') else ''}
<h2>Steps</h2><ol>{steps}</ol>
<h2>Gates</h2><ul>{gates or '<li>none</li>'}</ul>
<h2>Metrics against the baseline (measured)</h2><table><tr>{head}</tr>{body}</table>
{''.join(figs)}
<p><small>Environment: {env}</small></p>
</body></html>"""
