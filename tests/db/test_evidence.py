"""Evidence: the catalog's claims parsed from the taxonomy's text, and the measured figures beside
them — median and best per workload/device/scenario, each step against the state before it, the
verdicts and their reasons, the CSV — aggregated on SQLite and PostgreSQL in two queries."""
from __future__ import annotations

import csv
import io
import math

import pytest
import sqlalchemy as sa

from db import evidence, queries
from db.session import get_engine, session_scope
from playbooks import catalog
from playbooks.claims import claims_for, parse_claims

CPU_ENV = {"device": "cpu", "cpu": "AMD EPYC", "cpu_isa": "AVX512 (avx2 avx512f)", "scenario": "inference"}


# --- claims ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("entry", catalog.entries(), ids=lambda e: e.id)
def test_every_catalog_text_parses_into_sane_claims(entry):
    for c in claims_for(entry.id):
        lo, hi = c.factor_range()
        assert 0 < lo <= hi, (entry.id, c)
        assert c.text and c.text in entry.typical_wins, (entry.id, c.text)


@pytest.mark.parametrize("entry_id, quantity, factors", [
    ("gptq", "memory", (2.0, 4.0)),  # "2–4× mem ↓"
    ("gptq", "speed", (1.2, 1.8)),  # "1.2–1.8× speed (evidence table I)"
    ("smoothquant", "speed", (1.3, 1.6)),  # "~1.3–1.6× speed"
    ("early_exit", "speed", (1.25, 2.0)),  # "Latency ↓ 20–50%": a fifth to a half less time
    ("structured_pruning", "params", (1.25, 1 / 0.3)),  # "20–70% params ↓"
    ("mqa", "kv_memory", (1.0, 8.0)),  # "KV mem ↓ up to 8×"
    ("adam_8bit", "optimizer_memory", (4 / 1.1, 4 * 1.1)),  # "8 → 2 bytes per parameter (75% ↓)": one claim
    ("lora", "trainable_params", (10.0, 100.0)),
    ("qlora", "train_memory", (4.0, 6.0)),
    ("activation_checkpointing", "memory", (2.0, math.inf)),  # ">50% mem ↓"
    ("huffman_coding", "memory", (1.25, 1 / 0.7)),  # "20–30 % fewer stored bits"
])
def test_selected_claims_give_the_expected_ranges(entry_id, quantity, factors):
    first = next(c for c in claims_for(entry_id) if c.quantity == quantity)
    assert first.factor_range() == pytest.approx(factors)


def test_claim_details_reference_hardware_and_repeats():
    assert [c.text for c in claims_for("gptq")] == ["2–4× mem ↓", "1.2–1.8× speed", "1.3–2× speed"]
    assert claims_for("gptq")[1].source == "evidence table I"
    assert claims_for("int8_dynamic")[0].reference == "fp32"  # "~4× smaller Linear weights than fp32"
    assert claims_for("int4_weight_only")[0].reference == "16-bit"  # "vs bf16"
    assert claims_for("flash_attention_3")[0].hardware_text == "H100"
    assert claims_for("nm_sparsity")[0].hardware == "gpu"  # "on supported GPUs"
    assert claims_for("flash_attention")[0].hardware == "gpu"  # the catalog's devices: cuda only
    assert claims_for("binary_weights")[1].hardware == "cpu"  # "~58× faster convolutions on CPU"
    assert claims_for("half_precision")[0].hardware is None  # "GPUs with 16-bit tensor cores and CPUs with AVX-512"
    assert len(claims_for("adam_8bit")) == 1  # "8 → 2 bytes (75% ↓)" says one thing twice


@pytest.mark.parametrize("text, expected", [
    ("20–40 % more compute", [("compute", "increase", (1.2, 1.4))]),
    ("Up to ~3–5× larger batch/context at the same VRAM", [("capacity", "increase", (1.0, 5.0))]),
    ("Up to ~2.25–4× fewer multiplies for 3×3 convs", [("compute", "reduction", (1.0, 4.0))]),  # not "3×"
    ("Beats magnitude pruning (e.g. BERT at 3% weights)", []),  # a percentage with no direction
    ("Recovers most of PTQ's accuracy loss at int8/int4", []),
    ("", []),
])
def test_parse_claims_on_plain_texts(text, expected):
    got = [(c.quantity, c.direction, c.factor_range()) for c in parse_claims(text)]
    assert [(q, d) for q, d, _ in got] == [(q, d) for q, d, _ in expected]
    for (_, _, r), (_, _, want) in zip(got, expected):
        assert r == pytest.approx(want)


# --- aggregation ----------------------------------------------------------------------------------

def _run(s, steps, *, workload="evidence-lm", device="cpu", status="succeeded", team_id=1, env=CPU_ENV,
         baseline=None, step_metrics=()):
    snap = {"name": "ev", "title": "ev", "steps": [{"technique": t, "params": {}} for t in steps]}
    run = queries.create_run(s, playbook_name="ev", snapshot=snap, workload=workload, device=device, team_id=team_id)
    run.status, run.environment = status, env
    for st in run.steps:
        st.status = "succeeded"
    queries.write_metrics(s, run.id, "baseline", baseline or {"stored_bytes": 1000.0, "stored_bytes_vs_16bit": 2.0,
                                                               "decode_tokens_per_s": 100.0, "perplexity": 20.0})
    for i, values in enumerate(step_metrics):
        if values:
            queries.write_metrics(s, run.id, "step", values, step_index=i)
    s.flush()
    return run.id


def _gptq_step(bytes_, ratio, low, high, ppl=20.4):
    return {"stored_bytes": bytes_, "stored_bytes_vs_16bit": bytes_ / 500.0, "decode_tokens_per_s": 100.0 * ratio,
            "decode_tokens_per_s_ci_ratio": ratio, "decode_tokens_per_s_ci_low": low,
            "decode_tokens_per_s_ci_high": high, "perplexity": ppl}


@pytest.fixture
def seeded(any_db_url):
    with session_scope(any_db_url) as s:
        ids = {"gptq": [_run(s, ["gptq"], step_metrics=[_gptq_step(b, r, r - 0.05, r + 0.05)])
                        for b, r in ((250.0, 0.9), (300.0, 1.0), (200.0, 1.1))]}
        _run(s, ["gptq"], status="failed", step_metrics=[_gptq_step(10.0, 9.0, 8.9, 9.1)])  # never counted
        ids["other_team"] = _run(s, ["gptq"], team_id=queries.ensure_team(s, "ev-other").id,
                                 step_metrics=[_gptq_step(10.0, 9.0, 8.9, 9.1)])
        # prune first (same bytes, half the speed), then GPTQ: GPTQ is credited with its own change only
        ids["chain"] = _run(s, ["magnitude_pruning", "gptq"], workload="chain-lm", step_metrics=[
            {"stored_bytes": 1000.0, "stored_bytes_vs_16bit": 2.0, "decode_tokens_per_s": 50.0,
             "decode_tokens_per_s_ci_ratio": 0.5, "decode_tokens_per_s_ci_low": 0.45, "decode_tokens_per_s_ci_high": 0.55},
            _gptq_step(250.0, 0.6, 0.55, 0.65)])
        ids["flash"] = _run(s, ["flash_attention"], step_metrics=[_gptq_step(1000.0, 2.0, 1.9, 2.1)])
        ids["int8"] = _run(s, ["int8_weight_only"], step_metrics=[{"stored_bytes": 125.0, "stored_bytes_vs_16bit": 0.25}])
        ids["qat"] = _run(s, ["qat", "gptq"], workload="check-lm", step_metrics=[None, _gptq_step(250.0, 1.0, 0.9, 1.1)])
    return any_db_url, ids


def _by_tech(url, team_id=1, techniques=None):
    with session_scope(url) as s:
        return {ev.technique: ev for ev in evidence.evidence(s, team_id, techniques)}


def _group(ev, workload):
    return next(g for g in ev.groups if g.workload == workload)


def test_median_best_and_verdicts_per_workload(seeded):
    url, ids = seeded
    gptq = _by_tech(url)["gptq"]
    g = _group(gptq, "evidence-lm")
    assert set(g.run_ids) == set(ids["gptq"]) and g.run_ids[0] == max(ids["gptq"])  # failed and other-team runs left out
    mem = g.figures["memory_vs_16bit"]  # GPTQ quantizes: judged against a 16-bit copy (500 B here)
    assert (mem.median, mem.best, mem.n) == (pytest.approx(2.0), pytest.approx(2.5), 3)
    assert mem.best_run == ids["gptq"][2]
    assert g.figures["memory"].median == pytest.approx(4.0)  # against the fp32 baseline itself
    speed = g.figures["speed"]
    assert speed.median == pytest.approx(1.0) and speed.interval == pytest.approx((0.95, 1.05))
    assert g.figures["perplexity"].median == pytest.approx(1.02)
    verdicts = [(v.claim.text, v.verdict) for v in g.verdicts]
    assert verdicts == [("2–4× mem ↓", "within"), ("1.2–1.8× speed", "worse than"), ("1.3–2× speed", "worse than")]
    assert g.machines == ("AMD EPYC · AVX512 (avx2 avx512f)",) and g.scenario == "inference"


def test_a_step_is_judged_against_the_state_before_it(seeded):
    url, ids = seeded
    g = _group(_by_tech(url)["gptq"], "chain-lm")
    assert g.figures["speed"].median == pytest.approx(0.6 / 0.5)  # its own change, after the pruning step
    assert g.figures["speed"].interval is None  # the stored interval is against the baseline: not its own
    assert g.figures["memory"].median == pytest.approx(4.0)


def test_not_comparable_reasons_and_better_than(seeded):
    url, ids = seeded
    found = _by_tech(url)
    flash = found["flash_attention"].groups[0].verdicts[0]
    assert flash.verdict == "not comparable here"
    assert flash.reason == "the claim is for a GPU (the catalog's hardware needs), measured on cpu"
    assert flash.figure is not None and flash.figure.median == pytest.approx(2.0)  # shown, not judged
    pruning = found["magnitude_pruning"].groups[0].verdicts
    assert pruning[0].reason == "the claim counts parameters; Speedbook measures stored bytes"
    assert pruning[1].reason == "the claim is for sparse-aware hardware, measured on cpu"
    int8 = found["int8_weight_only"].groups[0].verdicts[0]  # "~2× weight memory ↓ vs bf16", measured 4×
    assert int8.verdict == "better than" and "×4" in int8.reason
    assert found["qat"].groups == ()  # a step with no figures of its own (check-only) is no evidence
    assert found["qat"].verdicts() == {"no runs yet"}
    assert found["sdpa"].claims == () and found["sdpa"].verdicts() == {"no runs yet"}


def test_no_figure_claim_and_missing_figure(any_db_url):
    with session_scope(any_db_url) as s:
        _run(s, ["sdpa"], step_metrics=[{"stored_bytes": 1000.0}])
        _run(s, ["kv_cache_quantization"], step_metrics=[{"stored_bytes": 1000.0}])
    found = _by_tech(any_db_url, techniques=["sdpa", "kv_cache_quantization"])
    (v,) = found["sdpa"].groups[0].verdicts
    assert (v.claim, v.verdict, v.reason) == (None, "not comparable here", "the claim states no figure")
    (kv,) = found["kv_cache_quantization"].groups[0].verdicts
    assert kv.reason == "these runs (inference scenario) stored no KV-cache bytes ↓"


def test_team_scope_and_one_technique(seeded):
    url, ids = seeded
    other = _by_tech(url, team_id=None)["gptq"]
    assert ids["other_team"] in _group(other, "evidence-lm").run_ids  # no team: every team's runs
    with session_scope(url) as s:
        one = evidence.technique_evidence(s, "gptq", team_id=1)
        with pytest.raises(KeyError, match="no executable technique"):
            evidence.technique_evidence(s, "obd_obs")
    assert one.entry.id == "gptq" and {g.workload for g in one.groups} == {"evidence-lm", "chain-lm", "check-lm"}


def test_run_evidence_gives_each_step_a_line(seeded):
    url, ids = seeded
    with session_scope(url) as s:
        steps = evidence.run_evidence(s, ids["chain"])
    assert set(steps) == {0, 1}
    line = evidence.step_line(steps[1][1])
    assert line.startswith("taxonomy claims 2–4× mem ↓ · this run bytes ↓ vs a 16-bit copy ×2 · within the claim")
    assert "1.2–1.8× speed · this run speed-up ×1.2 (decode tok/s) · within the claim" in line


def test_aggregation_takes_two_queries_whatever_the_number_of_runs(seeded):
    url, _ = seeded
    statements = []
    engine = get_engine(url)
    listen = lambda *a: statements.append(a[2])  # noqa: E731
    sa.event.listen(engine, "before_cursor_execute", listen)
    try:
        _by_tech(url)
    finally:
        sa.event.remove(engine, "before_cursor_execute", listen)
    assert len([q for q in statements if q.lstrip().upper().startswith("SELECT")]) == 2, statements


def test_csv_has_one_row_per_claim_and_numbers(seeded):
    url, ids = seeded
    found = list(_by_tech(url).values())
    rows = list(csv.DictReader(io.StringIO(evidence.to_csv(found))))
    assert tuple(rows[0]) == evidence.CSV_COLUMNS
    n_claim_rows = sum(len(g.verdicts) for ev in found for g in ev.groups)
    assert len(rows) == n_claim_rows + sum(1 for ev in found if not ev.groups)
    mem = next(r for r in rows if r["technique"] == "gptq" and r["workload"] == "evidence-lm" and r["quantity"] == "memory")
    assert float(mem["median"]) == pytest.approx(2.0) and float(mem["best"]) == pytest.approx(2.5)
    assert (mem["claimed_factor_low"], mem["claimed_factor_high"], mem["verdict"]) == ("2.0", "4.0", "within")
    assert set(mem["run_ids"].split()) == set(map(str, ids["gptq"]))
    within = list(csv.DictReader(io.StringIO(evidence.to_csv(found, ["within"]))))
    assert within and {r["verdict"] for r in within} == {"within"}


def test_table_rows_link_the_runs_and_filter_by_verdict(seeded):
    url, ids = seeded
    found = list(_by_tech(url).values())
    rows = evidence.table_rows(found, team="default")
    row = next(r for r in rows if r["technique"] == "gptq" and r["workload"] == "evidence-lm")
    assert row["latest run"] == f"run?run={max(ids['gptq'])}&team=default"
    assert row["memory (computed)"].startswith("bytes ↓ vs a 16-bit copy ×2 (best ×2.5 of 3 runs)")
    assert row["speed (computed)"].startswith("speed-up ×1.00 [0.95–1.05]")
    assert "2–4× mem ↓: within the claim" in row["verdict"]
    assert all("better than the claim" in r["verdict"] for r in evidence.table_rows(found, verdicts=["better than"]))
    assert {r["verdict"] for r in evidence.table_rows(found, verdicts=["no runs yet"])} == {"no runs yet"}
