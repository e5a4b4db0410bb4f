"""AppTest for the Evidence page (the table, its filters and the CSV) and the evidence sections of
the Catalog and Run pages, on runs seeded with known figures."""
from __future__ import annotations

import uuid

import pytest

from db import queries
from db.session import session_scope
from tests.conftest import ROOT

ENV = {"device": "cpu", "cpu": "AMD EPYC", "cpu_isa": "AVX512", "scenario": "inference"}


@pytest.fixture
def gptq_run(migrated_sqlite) -> tuple[int, str]:
    """A succeeded GPTQ run: bytes ×0.4 of the fp32 baseline (2.5× under a 16-bit copy), decode ×0.9."""
    workload = f"evidence-{uuid.uuid4().hex[:6]}"
    with session_scope() as s:
        snap = {"name": "ev-page", "title": "Evidence page", "steps": [{"technique": "gptq", "params": {}}]}
        run = queries.create_run(s, playbook_name="ev-page", snapshot=snap, workload=workload, device="cpu")
        run.status, run.environment, run.steps[0].status = "succeeded", ENV, "succeeded"
        queries.write_metrics(s, run.id, "baseline", {"stored_bytes": 1000.0, "stored_bytes_vs_16bit": 2.0,
                                                      "decode_tokens_per_s": 100.0, "perplexity": 20.0})
        queries.write_metrics(s, run.id, "step", {"stored_bytes": 200.0, "stored_bytes_vs_16bit": 0.4,
                                                  "decode_tokens_per_s": 90.0, "decode_tokens_per_s_ci_ratio": 0.9,
                                                  "decode_tokens_per_s_ci_low": 0.85, "decode_tokens_per_s_ci_high": 0.95,
                                                  "perplexity": 20.2}, step_index=0)
        return run.id, workload


def _evidence_page():
    """The page inside a navigation of its own, as app.py will route it (the page file run alone
    would put pages/ first on sys.path, where pages/playbooks.py hides the playbooks package)."""
    from streamlit.testing.v1 import AppTest

    script = ("import streamlit as st\n"
              f"st.navigation([st.Page({str(ROOT / 'pages' / 'evidence.py')!r}, url_path='evidence')]).run()\n")
    return AppTest.from_string(script, default_timeout=60).run()


def test_evidence_page_shows_a_seeded_techniques_verdict(gptq_run):
    run_id, workload = gptq_run
    at = _evidence_page()
    assert not at.exception
    assert at.title[0].value.endswith("Evidence")
    df = at.dataframe[0].value
    row = df[df["workload"] == workload].iloc[0]
    assert row["technique"] == "gptq" and row["runs"] == 1
    assert "2–4× mem ↓: within the claim" in row["verdict"]
    assert "1.2–1.8× speed: worse than the claim" in row["verdict"]
    assert row["memory (computed)"].startswith("bytes ↓ vs a 16-bit copy ×2.5")
    assert row["latest run"].startswith(f"run?run={run_id}")
    assert {"no runs yet"} <= set(df["verdict"])  # executable techniques nobody ran are listed too
    assert at.get("download_button")


def test_evidence_page_filters_by_family_and_verdict(gptq_run):
    _, workload = gptq_run
    at = _evidence_page()
    at.multiselect[0].set_value(["quantization"]).run()
    assert not at.exception
    assert set(at.dataframe[0].value["family"]) == {"quantization"}
    at.multiselect[1].set_value(["better than"]).run()
    assert not at.exception
    df = at.dataframe[0].value if at.dataframe else None
    assert df is None or workload not in set(df["workload"])  # the seeded run is within / worse, never better


def test_catalog_shows_gptq_claim_beside_measured_bytes_speed_and_run_links(page, gptq_run):
    run_id, workload = gptq_run
    at = page("catalog.py")
    at.text_input[0].set_value("GPTQ").run()
    assert not at.exception
    text = "\n".join(m.value for m in at.markdown).replace("\\", "")
    assert "taxonomy claims 2–4× mem ↓ · measured bytes ↓ vs a 16-bit copy ×2.5 (1 run) · within the claim" in text
    assert "speed-up ×0.90 [0.85–0.95] (decode tok/s; 1 run)" in text
    assert f"[run {run_id}](run?run={run_id}" in text  # with &team=<slug> once app.py's team selector has run
    assert workload in text


def test_run_page_has_one_evidence_line_per_step(page, gptq_run):
    run_id, _ = gptq_run
    at = page("run.py", {"run": str(run_id)})
    assert not at.exception
    lines = [c.value.replace("\\", "") for c in at.caption if c.value.startswith("evidence (computed")]
    assert len(lines) == 1
    assert "taxonomy claims 2–4× mem ↓ · this run bytes ↓ vs a 16-bit copy ×2.5 · within the claim" in lines[0]
