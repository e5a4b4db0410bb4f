"""Pure UI helpers: Pareto front, quality/speed ratios, markdown escaping, the HTML report."""
import pytest

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


def test_waterfall_colours_follow_the_metric_direction():
    from ui.charts import BAD, GOOD, waterfall

    deltas = [{"label": "baseline", "value": 10.0}, {"label": "1. step", "value": 29.0}]
    slow = waterfall(deltas, "latency_ms").data[0]  # ×2.9 slower: a rise of a lower-is-better metric
    assert slow.increasing.marker.color == BAD and slow.decreasing.marker.color == GOOD
    fast = waterfall(deltas, "decode_tokens_per_s").data[0]
    assert fast.increasing.marker.color == GOOD and fast.decreasing.marker.color == BAD


def test_timed_ratios_print_their_interval_and_verdict():
    from optimizers import stats
    from ui.format import metric_rows, ratio_text

    m = {"latency_ms": 4.2, **stats.figures("latency_ms", stats.RatioInterval(0.42, 0.40, 0.45, 7)),
         "decode_tokens_per_s": 30.0, **stats.figures("decode_tokens_per_s", stats.RatioInterval(1.1, 0.9, 1.3, 7))}
    assert ratio_text("latency_ms", m, 0.42) == "×0.42 [0.40–0.45] faster"
    assert ratio_text("decode_tokens_per_s", m, 1.1) == "×1.1 [0.9–1.3] no significant change"
    assert ratio_text("decode_tokens_per_s", {**m, **stats.figures("decode_tokens_per_s", stats.RatioInterval(
        0.5, 0.45, 0.55, 7))}, 0.5) == "×0.50 [0.45–0.55] slower"  # a rate that fell
    assert ratio_text("perplexity", m, 1.0123) == "×1.012"
    rows = metric_rows({"baseline": {"latency_ms": 10.0}, "steps": [{"technique": "x", "status": "succeeded", "metrics": m}]})
    assert not any("ci" in r["metric"] for r in rows)
    assert {r["metric"] for r in rows} >= {"latency (median)"}


def test_outcome_leads_with_the_gates():
    from ui.format import outcome_label

    assert outcome_label("succeeded", "missed") == "❌ gates missed"  # executed, but not a success
    assert outcome_label("succeeded", "passed") == "✅ gates passed"
    assert outcome_label("succeeded", None).endswith("gates not checked")
    assert outcome_label("failed", None).endswith("failed") and outcome_label("cancelled", "passed").endswith("cancelled")


def test_deltas_of_near_zero_references_are_absolute():
    from ui.format import delta_text

    assert delta_text("perplexity", 10.0, 11.0) == "+10.00 %"
    assert delta_text("kl_divergence", 0.0, 0.02).endswith("(reference ≈ 0)") and "%" not in delta_text("kl_divergence", 0.0, 0.02)
    assert delta_text("kl_divergence", 0.0, 0.0) == "±0" and delta_text("x", None, 1.0) == ""


def test_an_idle_page_polls_seldom():
    from ui.state import POLL_ACTIVE_S, POLL_IDLE_S, poll_interval

    assert poll_interval(True) == POLL_ACTIVE_S <= 2 and poll_interval(False) == POLL_IDLE_S >= 30


def test_headline_says_bytes_quality_and_speed_with_its_interval():
    from optimizers import stats
    from ui.format import headline, pivot_headline

    base = {"perplexity": 10.0, "decode_tokens_per_s": 20.0, "stored_bytes_vs_16bit": 2.0}
    final = {"perplexity": 10.15, "stored_bytes_vs_16bit": 0.27, "decode_tokens_per_s": 52.0,
             **stats.figures("decode_tokens_per_s", stats.RatioInterval(2.6, 2.4, 2.8, 7))}
    assert headline(base, final) == "bytes ×0.27 vs 16-bit · perplexity +1.5 % · decode ×2.6 [2.4–2.8]"
    plain = {"accuracy": 0.97, "latency_ms": 5.0}
    assert headline({"accuracy": 1.0, "latency_ms": 10.0}, plain) == "accuracy -3.0 points · latency ×0.50 (no interval)"
    assert headline(base, {}) == ""
    row = {"baseline_perplexity": 10.0, "final_perplexity": 10.15, "final_stored_bytes_vs_16bit": 0.27, "final_accuracy": None}
    assert pivot_headline(row) == "bytes ×0.27 vs 16-bit · perplexity +1.5 %"


def test_steps_after_a_failure_read_not_run():
    from ui.format import step_status

    assert step_status("failed", "pending") == "not run" and step_status("cancelled", "running") == "not run"
    assert step_status("running", "pending") == "pending" and step_status("failed", "failed") == "failed"


def test_step_chart_draws_intervals_as_error_bars():
    from optimizers import stats
    from ui.charts import step_ratio_figure

    summary = {"baseline": {"stored_bytes": 100.0, "latency_ms": 10.0, "perplexity": 10.0},
               "steps": [{"technique": "int8_dynamic", "metrics": {
                   "stored_bytes": 50.0, "perplexity": 10.2, "latency_ms": 5.0,
                   **stats.figures("latency_ms", stats.RatioInterval(0.5, 0.4, 0.7, 7))}},
                   {"technique": "advice", "metrics": {}}]}
    fig = step_ratio_figure(summary)
    bars = {b.name.rsplit(" (", 1)[0]: b for b in fig.data}
    assert list(bars["latency (median)"].y) == [0.5] and list(bars["latency (median)"].error_y.array) == [pytest.approx(0.2)]
    assert list(bars["latency (median)"].error_y.arrayminus) == [pytest.approx(0.1)]
    assert list(bars["stored bytes"].y) == [0.5] and list(bars["stored bytes"].x) == ["1. int8_dynamic"]
    assert step_ratio_figure({"baseline": {}, "steps": []}) is None


def test_pareto_joins_only_comparable_runs_and_draws_intervals():
    from ui.charts import pareto_figure

    def row(i, wl, speed, ppl, lo=None, hi=None):
        r = {"id": i, "workload": wl, "playbook_name": "p", "baseline_latency_ms": 10.0, "final_latency_ms": 10.0 / speed,
             "baseline_perplexity": 10.0, "final_perplexity": ppl}
        if lo:
            r |= {"final_latency_ms_ci_ratio": 1 / speed, "final_latency_ms_ci_low": 1 / hi, "final_latency_ms_ci_high": 1 / lo}
        return r

    fig = pareto_figure([row(1, "a", 2.0, 10.5, 1.8, 2.3), row(2, "a", 1.5, 10.1), row(3, "b", 3.0, 12.0)])
    names = [t.name for t in fig.data]
    assert names == ["a runs", "a Pareto front", "b runs"]  # no line joins workload a's runs to b's
    a = fig.data[0]
    assert list(a.text) == ["run 1", "run 2"]  # labelled points
    assert a.error_x.array[0] == pytest.approx(0.3) and a.error_x.arrayminus[0] == pytest.approx(0.2)
