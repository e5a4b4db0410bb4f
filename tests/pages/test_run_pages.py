"""AppTest for the New run, Runs and Run pages: empty states, submission, results, errors."""
from __future__ import annotations

from db import queries
from db.session import session_scope
from jobs import pipeline, submit

PB = {"name": "page-test", "title": "Page test", "steps": [{"technique": "int8_dynamic", "params": {}}]}


def _finished_run() -> int:
    pb = submit.validate_request(PB, "tiny-llama", "cpu")
    run_id = submit.create_run(pb, "tiny-llama", "cpu")
    pipeline.execute_run(run_id)
    return run_id


def test_new_run_page_lists_library_and_workloads(page):
    at = page("new_run.py")
    assert not at.exception
    assert at.title[0].value.endswith("New run")
    assert "tiny-llama" in at.selectbox[1].options
    assert any("int8-dynamic" in o for o in at.selectbox[0].options)


def test_new_run_page_reports_bad_yaml_without_trace(page):
    at = page("new_run.py")
    at.radio[0].set_value("Paste YAML").run()
    at.text_area[0].set_value("name: x\ntitle: y\nsteps:\n  - technique: warp_drive\n").run()
    assert not at.exception
    assert "unknown technique 'warp_drive'" in at.error[0].value.replace("\\", "")  # shown escaped: user text is never markdown
    assert at.button[0].disabled


def test_new_run_submit_creates_a_queued_run(page, monkeypatch):
    from jobs.celery_app import app

    sent = []

    class _Res:
        id = "task-1"

    monkeypatch.setattr(app, "send_task", lambda name, **k: sent.append({"name": name, **k}) or _Res())
    with session_scope() as s:
        before = queries.count_runs(s)
    at = page("new_run.py")
    at.button[0].click().run()
    assert not at.exception
    with session_scope() as s:
        assert queries.count_runs(s) == before + 1
        run = queries.list_runs(s, limit=1)[0]
        assert run.status == "queued" and run.task_id == "task-1"
    assert sent and sent[0]["name"] == "speedbook.run_playbook" and sent[0]["queue"] == "cpu" and sent[0]["args"] == [run.id]
    assert f"Run {run.id}" in at.title[0].value  # switched to the run's page


def test_runs_page_shows_runs(page):
    run_id = _finished_run()
    at = page("runs.py")
    assert not at.exception
    df = at.dataframe[0].value
    assert run_id in set(df["id"])


def test_run_page_shows_metrics_against_baseline(page):
    run_id = _finished_run()
    at = page("run.py", query={"run": str(run_id)})
    assert not at.exception
    assert f"Run {run_id}" in at.title[0].value
    df = at.dataframe[0].value
    assert "stored bytes" in set(df["metric"]) and "1. int8_dynamic ×" in df.columns
    assert any("×0.4" in v for v in df["1. int8_dynamic ×"])  # stored bytes ratio, observed ×0.467


SERVING_PB = {"name": "serving-page", "title": "Serving page", "when": {"goal": ["serve"]},
              "trace": {"requests": 3, "max_concurrency": 3, "prompt_tokens": [16, 24], "output_tokens": [2, 4]},
              "steps": [{"technique": "continuous_batching"}]}


def test_run_page_shows_the_serving_table_and_chart(page):
    pb = submit.validate_request(SERVING_PB, "tiny-llama", "cpu")
    run_id = submit.create_run(pb, "tiny-llama", "cpu")
    assert pipeline.execute_run(run_id) == "succeeded"
    at = page("run.py", query={"run": str(run_id)})
    assert not at.exception
    assert any(h.value == "Serving the trace (measured)" for h in at.subheader)
    table = next(d.value for d in at.dataframe if "stage" in d.value.columns)
    assert list(table["stage"]) == ["baseline (one at a time)", "1. continuous_batching"]
    assert list(table["exact outputs"]) == [100.0, 100.0]
    assert all(v > 0 for v in table["output tok/s"])


TRAINING_PB = {"name": "training-page", "title": "Training page", "when": {"goal": ["finetune"]},
               "training": {"steps": 4, "warmup": 1, "batch_size": 2, "seq_len": 16},
               "steps": [{"technique": "activation_checkpointing"}, {"technique": "lora", "params": {"rank": 2}}]}


def test_run_page_draws_loss_curves_and_memory_by_kind(page):
    pb = submit.validate_request(TRAINING_PB, "tiny-llama", "cpu")
    run_id = submit.create_run(pb, "tiny-llama", "cpu")
    assert pipeline.execute_run(run_id) == "succeeded"
    at = page("run.py", query={"run": str(run_id)})
    assert not at.exception
    assert any(h.value == "Training (measured)" for h in at.subheader)
    charts = [c for c in at.get("plotly_chart")]
    assert len(charts) >= 2
    import json

    specs = [json.loads(c.proto.spec) for c in charts]
    loss = next(sp for sp in specs if "Training loss" in sp["layout"]["title"]["text"])
    assert [t["name"] for t in loss["data"]] == ["baseline", "1. activation_checkpointing", "2. lora"]
    assert all(len(t["y"]) == 4 for t in loss["data"])
    mem = next(sp for sp in specs if "memory by kind" in sp["layout"]["title"]["text"])
    assert {t["name"] for t in mem["data"]} >= {"parameters", "gradients", "optimizer states", "activations"}


def test_run_page_empty_and_missing_states(page):
    at = page("run.py")
    assert not at.exception and "Pick a run" in at.info[0].value
    at = page("run.py", query={"run": "999999"})
    assert not at.exception and "does not exist" in at.warning[0].value


def test_failed_run_shows_error_not_trace(page):
    pb = submit.validate_request(PB, "tiny-llama", "cpu")
    run_id = submit.create_run(pb, "tiny-llama", "cpu")
    with session_scope() as s:
        queries.claim_run(s, run_id, "w")
        queries.finish_run(s, run_id, "failed", "step 1 (int8_dynamic) failed: ValueError: boom")
    at = page("run.py", query={"run": str(run_id)})
    assert not at.exception
    errors = [e.value for e in at.error]
    assert any("boom" in e for e in errors) and not any("Traceback" in e for e in errors)


def test_runs_page_lists_refused_messages_and_only_this_teams_runs(page):
    from db import queries
    from db.session import session_scope

    with session_scope() as s:
        other = queries.ensure_team(s, "other-team")
        queries.create_run(s, playbook_name="other-teams-run", snapshot={"steps": []}, workload="tiny-llama",
                           device="cpu", team_id=other.id)
        queries.add_dead_letter(s, worker="w", task="speedbook.run_playbook", reason="body must be a JSON list", excerpt="42")
    at = page("runs.py")
    assert not at.exception
    assert "other-teams-run" not in str([df.value for df in at.dataframe])
    assert any("Refused task messages" in e.label for e in at.expander)


def test_run_page_refuses_non_ascii_ids_and_other_teams_runs(page):
    from db import queries
    from db.session import session_scope

    at = page("run.py", {"run": "²"})
    assert not at.exception and "Pick a run" in at.info[0].value
    with session_scope() as s:
        other = queries.ensure_team(s, "another-team")
        run_id = queries.create_run(s, playbook_name="secret", snapshot={"steps": []}, workload="tiny-llama",
                                    device="cpu", team_id=other.id).id
    at = page("run.py", {"run": str(run_id)})
    assert not at.exception and "does not exist in this team" in at.warning[0].value


def test_run_page_shows_each_steps_diagnostics(page):
    """GPTQ's per-layer error used to be computed and thrown away; now it is on the Run page."""
    pb = submit.validate_request({**PB, "steps": [{"technique": "gptq", "params": {"group_size": 32}}]}, "tiny-llama", "cpu")
    run_id = submit.create_run(pb, "tiny-llama", "cpu")
    assert pipeline.execute_run(run_id) == "succeeded"
    at = page("run.py", query={"run": str(run_id)})
    assert not at.exception
    assert any("Diagnostics" in e.label for e in at.expander)
    figures = [set(df.value["figure"]) for df in at.dataframe if "figure" in df.value.columns]
    assert any("GPTQ relative layer-output error, worst layer" in f for f in figures)


def test_run_page_leads_with_outcome_headline_and_cards(page):
    run_id = _finished_run()
    at = page("run.py", query={"run": str(run_id)})
    assert not at.exception
    lead = at.markdown[0].value.replace("\\", "")  # escaped markdown
    assert lead.startswith("#### ") and "vs 16-bit" in lead  # outcome · headline, before anything else
    labels = [m.label for m in at.metric]
    assert "stored bytes vs a 16-bit copy" in labels and any("interval" in x for x in labels)
    assert any(m.label.startswith("top-1") for m in at.metric)  # fidelity in view, not in a scrolling table


def test_home_page_says_what_it_is_and_lists_the_latest_runs(page):
    at = page("home.py")
    assert not at.exception and at.title[0].value == "⚡ Speedbook"
    assert "measured against the unchanged model" in at.markdown[0].value
    run_id = _finished_run()
    at = page("home.py")
    assert not at.exception
    texts = " ".join(str(getattr(e, "label", "") or getattr(e, "value", "")) for e in at.main)
    assert f"run {run_id}" in texts and "vs 16" in texts.replace("\\", "")  # outcome and headline first


def test_new_run_preselects_a_fitting_workload_and_lists_parameters(page):
    at = page("new_run.py")
    at.selectbox[0].set_value("edge-vision").run()  # a CNN playbook
    assert not at.exception
    assert at.selectbox[1].value == "digits-cnn"
    tables = [t for p in at.get("popover") for t in p.get("arrow_data_frame")] if at.get("popover") else []
    frames = [df.value for df in at.dataframe] + [t.value for t in tables]
    assert any("parameter" in f.columns and "amount" in set(f["parameter"]) for f in frames)


def test_new_run_takes_a_local_model_directory_with_the_clis_refusals(page, data_dir):
    import json
    import os
    from pathlib import Path

    root = Path(os.environ["SPEEDBOOK_DATA"]) / "models"
    pickled = root / "pickled"
    pickled.mkdir(parents=True, exist_ok=True)
    (pickled / "config.json").write_text(json.dumps({"model_type": "llama"}))
    (pickled / "pytorch_model.bin").write_bytes(b"\x80\x04")
    at = page("new_run.py")
    at.text_input[0].set_value(str(pickled)).run()
    assert not at.exception
    assert "safetensors only" in at.error[0].value.replace("\\", "")
    assert next(b for b in at.button if b.label == "Run this playbook").disabled
    at.text_input[0].set_value("/etc").run()
    assert "outside the allowed model folders" in at.error[0].value.replace("\\", "")
    good = root / "good"
    good.mkdir(exist_ok=True)
    (good / "config.json").write_text(json.dumps({"model_type": "llama"}))
    (good / "model.safetensors").write_bytes(b"{}")
    at.text_input[0].set_value(str(good)).run()
    assert not at.error and any("Using the local model" in c.value for c in at.caption)
