"""Pure UI helpers: Pareto front, quality/speed ratios, markdown escaping, the HTML report."""
from ui.charts import pareto_front, quality_loss_pct, speedup
from ui.format import md_escape
from ui.report import run_report_html

XSS = "<img src=x onerror=alert(1)>"


def test_pareto_front():
    pts = [(1.0, 0.0, "a"), (2.0, 1.0, "b"), (1.5, 2.0, "c"), (3.0, 5.0, "d"), (2.0, 0.5, "e")]
    assert [k for *_, k in pareto_front(pts)] == ["a", "e", "d"]


def test_ratios():
    row = {"baseline_latency_ms": 10.0, "final_latency_ms": 4.0, "baseline_perplexity": 20.0, "final_perplexity": 21.0}
    assert speedup(row) == 2.5 and abs(quality_loss_pct(row) - 5.0) < 1e-9
    assert quality_loss_pct({"baseline_accuracy": 0.9, "final_accuracy": 0.81}) == (0.9 - 0.81) / 0.9 * 100
    assert speedup({}) is None


def test_md_escape_keeps_characters():
    assert md_escape("**x**") == "\\*\\*x\\*\\*"
    assert "<" not in md_escape(XSS).replace("\\<", "")


def test_report_escapes_user_text():
    summary = {"run_id": 1, "playbook": XSS, "workload": "<script>alert(1)</script>", "device": "cpu", "status": "failed",
               "error": "<b>boom</b>", "baseline": {"latency_ms": 2.0}, "final": {},
               "steps": [{"technique": "int8_dynamic", "params": {}, "status": "failed", "metrics": {"latency_ms": 1.0}, "error": None}],
               "gates": [], "environment": {}}
    html = run_report_html(summary, {"latency_ms": [{"label": "baseline", "value": 2.0}, {"label": "1. x", "value": 1.0}]})
    assert XSS not in html and "&lt;img src=x onerror=alert(1)&gt;" in html
    assert "<script>alert(1)</script>" not in html and "&lt;b&gt;boom" in html
    assert "plotly" in html.lower()  # chart inlined, self-contained
