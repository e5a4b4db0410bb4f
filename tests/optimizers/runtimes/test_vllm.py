"""The vLLM peer: absent here (no GPU, no vllm), so the export step says how to enable it and
measures nothing; with a stand-in engine the pipeline hands it the run's trace and the baseline's
tokens in the serving scenario, side by side with Speedbook's own figures."""
from __future__ import annotations

from db import queries
from db.session import session_scope
from jobs import pipeline, submit
from optimizers.runtimes import vllm


def test_missing_says_how_to_enable_it():
    assert "CUDA" in vllm.missing("cpu") and "INSTALL_VLLM=1" in vllm.missing("cpu")
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        assert "not installed" in vllm.missing("cuda") and "speedbook[vllm]" in vllm.missing("cuda")
    notes: list[str] = []
    assert vllm.peers_for("/nowhere", "cpu", notes) == {} and notes[0].startswith("vLLM peer not measured")


PB = {"name": "vllm-test", "title": "vllm test", "when": {"goal": ["serve"]},
      "trace": {"requests": 3, "max_concurrency": 3, "prompt_tokens": [16, 24], "output_tokens": [2, 4]},
      "steps": [{"technique": "int4_weight_only"}, {"technique": "export_compressed_tensors"}]}


def test_the_serving_scenario_hands_the_peer_its_trace_and_the_baselines_tokens(migrated_sqlite, monkeypatch):
    seen = {}

    def fake(self, workload, trace, reference):
        seen.update(checkpoint=self.checkpoint, trace=trace, reference=reference)
        return {"throughput_tokens_per_s": 123.0, "output_exact_fraction": 1.0}

    monkeypatch.setattr(vllm, "missing", lambda device: None)
    monkeypatch.setattr(vllm.VllmPeer, "serving_metrics", fake)
    pb = submit.validate_request(PB, "tiny-llama", "cpu")
    run_id = submit.create_run(pb, "tiny-llama", "cpu")
    assert pipeline.execute_run(run_id) == "succeeded"
    with session_scope() as s:
        summary = queries.run_summary(queries.get_run(s, run_id))
    export = summary["steps"][1]
    assert export["peers"]["vllm"]["throughput_tokens_per_s"] == 123.0
    assert seen["trace"].requests == 3 and len(seen["reference"]) == 3
    assert seen["checkpoint"].name == "compressed-tensors" and (seen["checkpoint"] / "config.json").is_file()
