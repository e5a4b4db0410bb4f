"""A serving playbook runs end to end: the baseline serves the trace one request at a time, each
runtime setting serves the same trace again with outputs equal to the baseline's, a setting the
scenario does not apply yet is skipped with its reason, a speculative step serves static batches
with batched verification (α and the mean accepted length among its figures), and the gates read
serving metrics."""
from __future__ import annotations

from db import queries
from db.session import session_scope
from jobs import pipeline, submit

PB = {
    "name": "serving-test", "title": "serving test", "when": {"goal": ["serve"]},
    "trace": {"requests": 5, "max_concurrency": 3, "prompt_tokens": [24, 40], "output_tokens": [3, 6],
              "shared_prefix_tokens": 16, "seed": 5},
    "steps": [{"technique": "static_batching"}, {"technique": "continuous_batching"},
              {"technique": "paged_kv_cache", "params": {"page_size": 8}}, {"technique": "prefix_caching"},
              {"technique": "chunked_prefill", "params": {"max_batch_tokens": 16}},
              {"technique": "speculative_decoding", "params": {"source": "prompt_lookup", "gamma": 3}},
              {"technique": "torch_compile"}],
    "expect": [{"metric": "output_exact_fraction", "min": 1.0}, {"metric": "perplexity", "max_ratio": 1.001}],
}


def test_serving_playbook_runs_every_setting_on_the_same_trace(migrated_sqlite):
    pb = submit.validate_request(PB, "tiny-llama", "cpu")
    assert pb.scenario == "serving" and pb.trace.requests == 5
    run_id = submit.create_run(pb, "tiny-llama", "cpu")
    assert pipeline.execute_run(run_id, worker="test") == "succeeded"
    with session_scope() as s:
        summary = queries.run_summary(queries.get_run(s, run_id))
    base = summary["baseline"]
    assert base["output_exact_fraction"] == 1.0 and base["trace_requests"] == 5
    assert base["kv_cache_used_fraction"] == 1.0  # one request at a time in an exactly sized static cache
    assert summary["environment"]["scenario"] == "serving" and summary["environment"]["baseline_notes"]
    steps = {st["technique"]: st for st in summary["steps"]}
    for name in ("static_batching", "continuous_batching", "paged_kv_cache", "prefix_caching", "chunked_prefill"):
        m = steps[name]["metrics"]
        assert steps[name]["status"] == "succeeded", name
        assert m["output_exact_fraction"] == 1.0, name
        assert m["perplexity"] == base["perplexity"], name  # the model is unchanged
        for k in ("throughput_tokens_per_s", "ttft_ms_p50", "tpot_ms_p95", "e2e_ms_p95", "kv_cache_bytes_reserved"):
            assert m[k] > 0, (name, k)
    assert steps["static_batching"]["metrics"]["kv_cache_used_fraction"] < 1.0  # the padded rectangle
    assert "kv_cache_pool_bytes" in steps["continuous_batching"]["metrics"]
    assert any("page 8 tokens" in n for n in steps["paged_kv_cache"]["notes"])
    spec = steps["speculative_decoding"]
    assert spec["status"] == "succeeded" and spec["metrics"]["output_exact_fraction"] == 1.0
    assert any("batched verification" in n for n in spec["notes"])  # under load: static batches, one verify forward
    assert 0.0 <= spec["metrics"]["spec_acceptance_rate"] <= 1.0
    assert 1.0 <= spec["metrics"]["spec_mean_accepted_length"] <= 3 + 1
    assert steps["torch_compile"]["status"] == "skipped"
    assert "eagerly" in steps["torch_compile"]["verdict"]["reason"]
    assert [g["ok"] for g in summary["gates"]] == [True, True]
