"""The plain pipeline, in-process: a run goes queued → running → succeeded with its rows;
a failing step fails the run and keeps earlier steps; bad input writes nothing."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import sqlalchemy as sa

from db import queries
from db.models import Metric, Run, StepResult
from db.session import session_scope
from jobs import pipeline, submit
from playbooks.errors import PlaybookError

PB = {
    "name": "int8-test",
    "title": "int8 test",
    "steps": [{"technique": "int8_dynamic", "params": {}}],
    "expect": [{"metric": "perplexity", "max_ratio": 1.05}],
}
PRUNE = [{"technique": "magnitude_pruning", "params": {"amount": 0.3}}]


def _counts() -> tuple[int, int, int]:
    with session_scope() as s:
        return tuple(s.scalar(sa.select(sa.func.count(t.id))) for t in (Run, StepResult, Metric))  # type: ignore[return-value]


def test_run_succeeds_with_baseline_step_and_final_metrics(migrated_sqlite):
    pb = submit.validate_request(PB, "tiny-llama", "cpu")
    run_id = submit.create_run(pb, "tiny-llama", "cpu")
    assert pipeline.execute_run(run_id, worker="test") == "succeeded"
    with session_scope() as s:
        summary = queries.run_summary(queries.get_run(s, run_id))
    assert summary["status"] == "succeeded"
    step = summary["steps"][0]
    assert step["status"] == "succeeded"
    # int8 weights: the Linear layers shrink ~4×; embeddings stay fp32 on this tiny model
    assert step["metrics"]["stored_bytes"] < 0.6 * summary["baseline"]["stored_bytes"]  # observed 0.467
    assert step["metrics"]["top1_agreement"] > 0.8  # observed 0.93 on random weights
    assert summary["final"]["stored_bytes"] == step["metrics"]["stored_bytes"]
    peer = step["peers"]["torchao"]  # torchao's int8 dynamic on the same model, same run, same baseline
    assert peer["stored_bytes"] < summary["baseline"]["stored_bytes"] and peer["top1_agreement"] > 0.8
    assert summary["gates"][0]["metric"] == "perplexity"
    assert summary["environment"]["device"] == "cpu"
    # a second execution of the same run is a no-op (e.g. a redelivered message)
    assert pipeline.execute_run(run_id, worker="again") == "succeeded"
    with session_scope() as s:
        assert s.scalar(sa.select(sa.func.count(Metric.id)).where(Metric.run_id == run_id, Metric.phase == "step", Metric.variant == "")) == len(step["metrics"])


def test_failing_step_fails_run_and_keeps_earlier_steps(migrated_sqlite, monkeypatch):
    from optimizers.techniques import int8_dynamic

    calls = {"n": 0}
    real = int8_dynamic.Int8Dynamic.apply

    def flaky(self, wl, cfg):
        calls["n"] += 1
        raise RuntimeError("simulated failure in the second step")

    monkeypatch.setattr(int8_dynamic.Int8Dynamic, "apply", flaky)
    pb = submit.validate_request({**PB, "steps": PRUNE + PB["steps"]}, "tiny-llama", "cpu")
    run_id = submit.create_run(pb, "tiny-llama", "cpu")
    assert pipeline.execute_run(run_id) == "failed"
    with session_scope() as s:
        run = queries.get_run(s, run_id)
        assert "step 2 (int8_dynamic) failed" in run.error and "simulated failure" in run.error
        assert "Traceback" not in run.error
        assert [st.status for st in run.steps] == ["succeeded", "failed"]
        assert any(m.phase == "step" and m.step_index == 0 for m in run.metrics)


def test_advice_only_and_needs_gpu_steps_are_skipped_with_reason(migrated_sqlite, monkeypatch):
    from optimizers import registry
    from playbooks import catalog

    monkeypatch.setattr(catalog, "has_entry", lambda e: e == "kv_cache_eviction")
    monkeypatch.setattr(catalog, "get_entry", lambda e: SimpleNamespace(id=e, name=e, reason="needs vLLM"))
    pb = submit.validate_request({**PB, "steps": [{"technique": "kv_cache_eviction"}] + PB["steps"]}, "tiny-llama", "cpu")
    run_id = submit.create_run(pb, "tiny-llama", "cpu")
    assert pipeline.execute_run(run_id) == "succeeded"
    with session_scope() as s:
        run = queries.get_run(s, run_id)
        assert run.steps[0].status == "skipped" and run.steps[0].verdict == {"status": "advice_only", "reason": "needs vLLM"}
        assert run.steps[1].status == "succeeded"
    assert "int8_dynamic" in registry.names()


def test_cancel_between_steps(migrated_sqlite, monkeypatch):
    pb = submit.validate_request({**PB, "steps": PRUNE + PB["steps"]}, "tiny-llama", "cpu")
    run_id = submit.create_run(pb, "tiny-llama", "cpu")
    from optimizers.techniques import magnitude_pruning

    real = magnitude_pruning.MagnitudePruning.apply

    def cancel_then_apply(self, wl, cfg):
        with session_scope() as s:
            queries.cancel_run(s, run_id)
        return real(self, wl, cfg)

    monkeypatch.setattr(magnitude_pruning.MagnitudePruning, "apply", cancel_then_apply)
    assert pipeline.execute_run(run_id) == "cancelled"
    with session_scope() as s:
        run = queries.get_run(s, run_id)
        assert run.status == "cancelled"
        assert run.steps[1].status == "pending"


@pytest.mark.parametrize(
    "playbook, workload, device, fragment",
    [
        ({**PB, "steps": [{"technique": "nope"}]}, "tiny-llama", "cpu", "unknown technique 'nope'"),
        ({**PB, "steps": [{"technique": "int8_dynamic", "params": {"bitz": 4}}]}, "tiny-llama", "cpu", "params.bitz"),
        (PB, "no-such-model", "cpu", "workload='no-such-model' is unknown"),
        (PB, "tiny-llama", "tpu", "device='tpu' is not valid"),
        (PB, "./missing/dir", "cpu", "outside the allowed model folders"),
    ],
)
def test_bad_input_writes_nothing_and_enqueues_nothing(migrated_sqlite, monkeypatch, tmp_path, playbook, workload, device,
                                                        fragment):
    from jobs.celery_app import app

    monkeypatch.setenv("SPEEDBOOK_MODEL_ROOTS", str(tmp_path / "models"))  # the repo (cwd) is outside it, wherever cloned

    sent = []
    monkeypatch.setattr(app, "send_task", lambda *a, **k: sent.append((a, k)))
    before = _counts()
    with pytest.raises(PlaybookError) as err:
        submit.submit(playbook, workload, device)
    assert fragment in str(err.value)
    assert _counts() == before and sent == []
