"""A training playbook runs end to end: the baseline trains the fp32 full fine-tune, each recipe
step trains the same batches again with the recipe so far, a transform before an adapter step is
the base it trains on, settings of other scenarios are skipped with their reason, progress is
written while training, the loss curves are stored for the Run page, gates read training metrics;
and a cancel stops the run between training steps, keeping what was measured."""
from __future__ import annotations

import pytest

from db import queries
from db.session import session_scope
from jobs import pipeline, submit

PB = {
    "name": "training-test", "title": "training test", "when": {"goal": ["finetune"]},
    "training": {"steps": 5, "warmup": 1, "batch_size": 4, "seq_len": 32, "lr": 0.001},
    "steps": [{"technique": "bf16_mixed_precision", "params": {"on_emulating_cpu": True}},
              {"technique": "activation_checkpointing"},
              {"technique": "gradient_accumulation", "params": {"micro_batches": 2}},
              {"technique": "nf4"}, {"technique": "qlora", "params": {"rank": 4}},
              {"technique": "sequence_parallel"}, {"technique": "paged_kv_cache"}],
    "expect": [{"metric": "train_memory_model_state_bytes", "max_ratio": 0.5},
               {"metric": "eval_loss", "max_ratio": 1.0}],
}


def test_training_playbook_runs_its_recipe_steps_on_the_same_batches(migrated_sqlite):
    pb = submit.validate_request(PB, "tiny-llama", "cpu")
    assert pb.scenario == "training" and pb.training.steps == 5
    run_id = submit.create_run(pb, "tiny-llama", "cpu")
    assert pipeline.execute_run(run_id, worker="test") == "succeeded"
    with session_scope() as s:
        summary = queries.run_summary(queries.get_run(s, run_id))
    base, env = summary["baseline"], summary["environment"]
    assert env["scenario"] == "training" and len(env["baseline_details"]["loss_curve"]) == 5
    assert "progress" not in env  # the finished baseline replaced its progress reports
    steps = {st["technique"]: st for st in summary["steps"]}
    for name in ("bf16_mixed_precision", "activation_checkpointing", "gradient_accumulation", "nf4", "qlora"):
        assert steps[name]["status"] == "succeeded", name
        assert len(steps[name]["details"]["loss_curve"]) == 5, name
        assert steps[name]["metrics"]["train_loss_first"] == pytest.approx(base["train_loss_first"], rel=0.05), name
    assert steps["activation_checkpointing"]["details"]["settings"] == {"training": {"checkpointing": 1}}
    assert "bf16 autocast" in steps["gradient_accumulation"]["notes"][0]  # the recipe accumulates
    assert any("quantized layers" in n for n in steps["nf4"]["notes"])  # full FT of an NF4 model: float params only
    q = steps["qlora"]["metrics"]
    assert q["trainable_fraction"] < 0.2 and q["train_memory_params_bytes"] < 0.5 * base["train_memory_params_bytes"]
    for name in ("sequence_parallel", "paged_kv_cache"):
        assert steps[name]["status"] == "skipped", name
    assert "--scenario serving" in steps["paged_kv_cache"]["verdict"]["reason"]
    assert [g["ok"] for g in summary["gates"]][0] is True


def test_cancel_stops_a_training_run_between_steps(migrated_sqlite, monkeypatch):
    pb = submit.validate_request(PB, "tiny-llama", "cpu")
    run_id = submit.create_run(pb, "tiny-llama", "cpu")
    calls = []
    real = pipeline._Progress.__call__

    def cancel_on_third(self, step, steps, loss):
        calls.append((self.index, step))
        if self.index == 0 and step == 3:
            with session_scope() as s:
                queries.cancel_run(s, run_id)
        real(self, step, steps, loss)

    monkeypatch.setattr(pipeline._Progress, "__call__", cancel_on_third)
    assert pipeline.execute_run(run_id, worker="test") == "cancelled"
    assert calls[:5] == [(None, k) for k in range(1, 6)]  # the baseline reported every step
    assert calls[-1] == (0, 3)  # stopped at the step after the request, not at the end of the measurement
    with session_scope() as s:
        summary = queries.run_summary(queries.get_run(s, run_id))
    assert summary["baseline"]["train_steps"] == 5  # what was measured is kept
    assert summary["steps"][0]["status"] in ("running", "pending", "failed")
