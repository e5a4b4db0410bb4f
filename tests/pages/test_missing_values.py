"""No table on any page shows "None" or "nan": runs with gaps (a succeeded run that measured only
some figures, a failed run with none, a queued one), kernel requests of both modes and a shared
playbook are seeded, every page is rendered with AppTest, and each table cell is either a value or
"—" (a null cell must be drawn with the "—" placeholder). Bytes carry binary prefixes, and no
table has a "B" unit column beside MiB values."""
from __future__ import annotations

import math
import re

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from db import queries, sharing
from db.models import KernelBenchmark, utcnow
from db.session import session_scope
from tests.conftest import ROOT

SNAPSHOT = {"name": "gappy", "title": "Gappy", "steps": [{"technique": "int8_dynamic", "params": {}},
                                                          {"technique": "gptq", "params": {"group_size": 32}}]}
WORDS = re.compile(r"\bNone\b|\bnan\b|\bNaN\b|\bNaT\b")


@pytest.fixture(scope="module")
def gappy(migrated_sqlite) -> dict:
    """Runs of the default team with figures missing, kernel rows, and a share link."""
    with session_scope() as s:
        pid = queries.save_playbook(s, name="gappy", title="Gappy", yaml_text="name: gappy\ntitle: Gappy\nsteps:\n"
                                    "  - technique: int8_dynamic\n").id
        ids = {}
        for status in ("succeeded", "failed", "queued"):
            run = queries.create_run(s, playbook_name="gappy", snapshot=SNAPSHOT, workload="tiny-llama", device="cpu",
                                     playbook_id=pid)
            run.status, run.started_at = status, None if status == "queued" else utcnow()
            run.finished_at = None if status == "queued" else utcnow()
            ids[status] = run.id
        ok = ids["succeeded"]
        queries.write_metrics(s, ok, "baseline", {"stored_bytes": 1_234_567, "perplexity": 10.0})  # no latency
        queries.write_metrics(s, ok, "step", {"stored_bytes": 600_000, "latency_ms": 3.0}, step_index=0)  # no perplexity
        queries.write_metrics(s, ok, "final", {"stored_bytes": 600_000, "latency_ms": 3.0, "peak_memory_bytes": float("nan")})
        queries.get_run(s, ok).steps[0].status = "succeeded"
        s.add(KernelBenchmark(kernel="rmsnorm", shape="m=8,n=8", dtype="float32", device="cpu", mode="interpreter",
                              status="succeeded", row={"params": {}, "max_abs_err": 1e-7}))
        s.add(KernelBenchmark(kernel="rmsnorm", shape="m=64,n=64", dtype="bfloat16", device="cuda", mode="bench",
                              status="queued", row={"params": {}}))
        token = sharing.create_link(s, pid)
    return {**ids, "token": token}


def shown_missing(at: AppTest) -> list[str]:
    """Cells that would render as None / nan: a null not drawn with the "—" placeholder, or text saying so."""
    bad = []
    for df in at.dataframe:
        placeholder = df.proto.placeholder if df.proto.HasField("placeholder") else None
        frame: pd.DataFrame = df.value
        for col in frame.columns:
            for v in frame[col]:
                null = v is None or v is pd.NaT or (isinstance(v, float) and math.isnan(v))
                if null and placeholder != "—":
                    bad.append(f"{col}: a null drawn as 'None'")
                elif isinstance(v, str) and WORDS.search(v):
                    bad.append(f"{col}: {v!r}")
        if "unit" in frame.columns and frame["unit"].eq("B").any():
            bad.append("a 'B' unit column beside binary-prefixed values")
    return bad


def _shared(token: str) -> AppTest:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    at.query_params["share"] = token
    return at.run()


@pytest.mark.parametrize("name", ["home.py", "runs.py", "dashboard.py", "compare.py", "playbooks.py", "kernel_lab.py",
                                  "new_run.py", "guide.py", "run.py", "shared"])
def test_no_table_shows_none_or_nan(page, gappy, name):
    query = {"compare.py": {"runs": f"{gappy['succeeded']},{gappy['failed']},{gappy['queued']}"},
             "run.py": {"run": str(gappy["succeeded"])}}.get(name)
    session = {"guide_step": 3, "guide_done": True} if name == "guide.py" else None  # straight to the recommendations
    at = _shared(gappy["token"]) if name == "shared" else page(name, query, session)
    assert not at.exception
    if name not in ("home.py", "playbooks.py"):
        assert at.dataframe, f"{name} drew no table to check"
    assert shown_missing(at) == []


def test_tables_use_binary_prefixes(page, gappy):
    at = page("run.py", {"run": str(gappy["succeeded"])})
    metrics = next(d.value for d in at.dataframe if "metric" in d.value.columns)
    stored = metrics.set_index("metric").loc["stored bytes"]
    assert stored["baseline"] == "1.18 MiB" and stored["1. int8_dynamic"] == "585.94 KiB"  # 1,234,567 B and 600,000 B
    at = page("dashboard.py")
    table = at.dataframe[0].value
    row = table.set_index("id").loc[gappy["succeeded"]]
    assert row["final stored bytes (MiB)"] == pytest.approx(600_000 / 2**20)
    assert not [c for c in table.columns if "bytes" in c and "(MiB)" not in c and "÷" not in c]  # no raw byte counts


def test_html_report_has_no_none_cells(gappy):
    from ui.report import run_report_html

    with session_scope() as s:
        summary = queries.run_summary(queries.get_run(s, gappy["succeeded"]))
    html = run_report_html({**summary, "environment": {"device": "cpu", "gpu": None}}, {})
    cells = re.findall(r"<td>(.*?)</td>", html)
    assert cells and not [c for c in cells if not c or WORDS.search(c)]
    assert "<th>unit</th>" not in html
    assert "gpu=—" in html and not WORDS.search(html)


def test_helpers_show_missing_as_a_dash_and_bytes_in_mib():
    from ui.charts import waterfall
    from ui.format import MISSING, column_label, column_value, fmt_value, or_missing

    assert [or_missing(v) for v in (None, "", float("nan"), 0, "x")] == [MISSING, MISSING, MISSING, 0, "x"]
    assert fmt_value("latency_ms", float("nan")) == MISSING
    assert column_label("stored_bytes", "final ") == "final stored bytes (MiB)" and column_value("stored_bytes", 3 * 2**20) == 3.0
    assert column_label("latency_ms") == "latency (median) (ms)" and column_value("latency_ms", 2.5) == 2.5
    assert "(×)" not in column_label("stored_bytes_vs_16bit") and column_value("perplexity", None) is None
    fig = waterfall([{"label": "baseline", "value": 4 * 2**20}, {"label": "1. int8_dynamic", "value": 2**20}], "stored_bytes")
    assert "MiB" in fig.layout.title.text and list(fig.data[0].y[:2]) == [4.0, -3.0]
