"""A compression playbook whose steps train runs end to end in the inference scenario: the pruning
step's effect and the recovery's are both measured against the same baseline, the recovery's own
training cost and loss curve are stored with it, its progress is written while it trains, and a
cancel stops it between its training steps."""
from __future__ import annotations

from db import queries
from db.session import session_scope
from jobs import pipeline, submit

PB = {
    "name": "recover-test", "title": "recovery test", "when": {"goal": ["serve"]}, "scenario": "inference",
    "steps": [{"technique": "magnitude_pruning", "params": {"amount": 0.6, "store_sparse": False}},
              {"technique": "recovery_finetune", "params": {"steps": 5, "batch_size": 4, "seq_len": 32,
                                                            "lr": 0.001, "teacher": "original"}}],
    "expect": [{"metric": "perplexity", "max_ratio": 100.0}],
}


def _summary(run_id: int) -> dict:
    with session_scope() as s:
        return queries.run_summary(queries.get_run(s, run_id))


def test_pruning_then_recovery_measures_both_and_stores_the_training(migrated_sqlite, monkeypatch):
    seen = []
    real = pipeline._Progress.__call__

    def spy(self, step, steps, loss):
        seen.append((self.index, step, steps))
        real(self, step, steps, loss)

    monkeypatch.setattr(pipeline._Progress, "__call__", spy)
    pb = submit.validate_request(PB, "tiny-llama", "cpu")
    run_id = submit.create_run(pb, "tiny-llama", "cpu")
    assert pipeline.execute_run(run_id, worker="test") == "succeeded"
    summary = _summary(run_id)
    prune, recover = summary["steps"]
    assert prune["status"] == recover["status"] == "succeeded"
    assert "perplexity" in prune["metrics"] and "perplexity" in recover["metrics"]
    d = recover["diagnostics"]
    assert d["pruned_weights_revived"] == 0 and abs(d["sparsity"] - 0.6) < 0.01
    assert d["train_steps"] == 5 and d["train_peak_memory_bytes"] > 0
    assert len(recover["details"]["loss_curve"]) == 5
    assert any("distilled from the model before compression" in n for n in recover["notes"])
    assert [s for i, s, _ in seen if i == 1] == [1, 2, 3, 4, 5]  # the recovery reported each training step


def test_cancel_stops_a_training_transform_between_its_steps(migrated_sqlite, monkeypatch):
    pb = submit.validate_request(PB, "tiny-llama", "cpu")
    run_id = submit.create_run(pb, "tiny-llama", "cpu")
    real = pipeline._Progress.__call__
    calls = []

    def cancel_on_second(self, step, steps, loss):
        calls.append((self.index, step))
        if self.index == 1 and step == 2:
            with session_scope() as s:
                queries.cancel_run(s, run_id)
        real(self, step, steps, loss)

    monkeypatch.setattr(pipeline._Progress, "__call__", cancel_on_second)
    assert pipeline.execute_run(run_id, worker="test") == "cancelled"
    assert calls[-1] == (1, 2)
    summary = _summary(run_id)
    assert summary["steps"][0]["status"] == "succeeded"  # what was measured before the cancel is kept
