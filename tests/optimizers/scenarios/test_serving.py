"""The serving scenario: the trace is deterministic, the figures are the textbook ones on
synthetic timings, and every engine serves outputs equal to one-at-a-time greedy decoding (the
runtime settings are exact; a difference would be a scheduling or masking bug)."""
from __future__ import annotations

import pytest
import torch

from optimizers.scenarios.serving import (ServingResult, Served, exactness, figures, kv_bytes_per_token, percentile,
                                          serve)
from optimizers.scenarios.trace import TraceConfig, make_trace
from optimizers.workloads import load_workload

STREAM = torch.arange(5000)


def test_trace_is_deterministic_and_follows_its_distributions():
    cfg = TraceConfig(requests=40, prompt_tokens=(20, 60), output_tokens=(5, 9), shared_prefix_tokens=8,
                      arrival="poisson", rate_per_s=10.0, seed=3)
    a, b = make_trace(STREAM, cfg), make_trace(STREAM, cfg)
    assert a == b
    assert a != make_trace(STREAM, cfg.model_copy(update={"seed": 4}))
    assert all(20 <= len(r.prompt) <= 60 and 5 <= r.output_tokens <= 9 for r in a)
    assert all(r.prompt[:8] == list(range(8)) for r in a)  # the shared prefix: the stream's first tokens
    arrivals = [r.arrival_s for r in a]
    assert arrivals[0] == 0.0 and arrivals == sorted(arrivals)
    gaps = [y - x for x, y in zip(arrivals, arrivals[1:])]
    assert 0.05 < sum(gaps) / len(gaps) < 0.2  # mean inter-arrival 1/rate = 0.1 s (39 draws)
    once = make_trace(STREAM, cfg.model_copy(update={"arrival": "all_at_once"}))
    assert {r.arrival_s for r in once} == {0.0}


def test_trace_refuses_what_cannot_be_served():
    with pytest.raises(ValueError, match="shared_prefix_tokens=64 must be below prompt_tokens min 32"):
        TraceConfig(prompt_tokens=(32, 64), shared_prefix_tokens=64)
    with pytest.raises(ValueError, match="output_tokens=.9, 5. must satisfy"):
        TraceConfig(output_tokens=(9, 5))
    with pytest.raises(ValueError, match="too few for prompts of 192 tokens"):
        make_trace(torch.arange(100), TraceConfig())


def test_percentile_is_linear_interpolation_between_order_statistics():
    assert percentile([4, 1, 3, 2], 50) == 2.5
    assert percentile([1, 2, 3, 4], 95) == pytest.approx(3.85)  # numpy.percentile([1,2,3,4], 95)
    assert percentile([7.0], 95) == 7.0
    assert percentile(list(range(101)), 95) == 95
    with pytest.raises(ValueError):
        percentile([], 50)


def test_figures_on_synthetic_timings():
    # request 0 arrives at 0, tokens at 1.0, 1.5, 2.0 s; request 1 arrives at 0.5, tokens at 3.0, 3.2 s
    served = [Served([1, 2, 3], 0.0, [1.0, 1.5, 2.0]), Served([4, 5], 0.5, [3.0, 3.2])]
    f = figures(ServingResult(served, makespan_s=4.0, kv_reserved_bytes=200.0, kv_used_bytes=150.0),
                [[1, 2, 3], [4, 9]])
    assert f["throughput_tokens_per_s"] == 5 / 4.0 and f["requests_per_s"] == 0.5
    assert f["ttft_ms_p50"] == pytest.approx((1000 + 2500) / 2)
    assert f["tpot_ms_p50"] == pytest.approx((500 + 200) / 2)  # (2.0 − 1.0)/2 and (3.2 − 3.0)/1
    assert f["e2e_ms_p95"] == pytest.approx(2000 + 0.95 * (2700 - 2000))
    assert f["kv_cache_used_fraction"] == 0.75
    assert f["output_exact_fraction"] == 0.5 and f["output_prefix_agreement"] == pytest.approx((1 + 0.5) / 2)


def test_exactness_counts_whole_requests_and_agreeing_prefixes():
    assert exactness([[1, 2], [3, 4]], [[1, 2], [3, 4]]) == {"output_exact_fraction": 1.0,
                                                              "output_prefix_agreement": 1.0}
    assert exactness([[9, 2, 3]], [[1, 2, 3]])["output_prefix_agreement"] == 0.0
    with pytest.raises(ValueError, match="2 outputs for 1 reference"):
        exactness([[1], [2]], [[1]])


def test_kv_bytes_per_token_from_the_config():
    wl = load_workload("tiny-llama")
    c = wl.model.config
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    assert kv_bytes_per_token(wl.model) == 2 * c.num_hidden_layers * c.num_key_value_heads * head_dim * 4


ENGINES = [
    {"batching": "static"},
    {"batching": "continuous"},
    {"batching": "continuous", "kv_page_size": 8, "prefix_caching": True},
    {"batching": "continuous", "max_batch_tokens": 24},  # chunked prefill: prompts longer than a step's budget
]


@pytest.mark.parametrize("workload", ["tiny-llama", "ref-lm"])
def test_every_engine_serves_the_baselines_greedy_outputs(workload):
    wl = load_workload(workload)
    cfg = TraceConfig(requests=6, max_concurrency=3, prompt_tokens=(20, 48), output_tokens=(4, 9),
                      shared_prefix_tokens=16, seed=1)
    trace = make_trace(wl.eval.token_ids, cfg)
    base = serve(wl, trace, cfg, {})
    ref = [s.tokens for s in base.served]
    assert [len(t) for t in ref] == [r.output_tokens for r in trace]
    assert base.kv_used_bytes == base.kv_reserved_bytes > 0  # a static cache sized to each request
    for settings in ENGINES:
        out = serve(wl, trace, cfg, settings)
        f = figures(out, ref)
        assert f["output_exact_fraction"] == 1.0, settings
        assert 0 < out.kv_used_bytes <= out.kv_reserved_bytes, settings
        assert all(len(s.stamps) == len(s.tokens) for s in out.served), settings
        assert all(s.stamps[0] >= s.arrival for s in out.served), settings


def test_static_batching_reserves_the_padded_rectangle():
    wl = load_workload("tiny-llama")
    cfg = TraceConfig(requests=4, max_concurrency=4, prompt_tokens=(10, 40), output_tokens=(2, 12), seed=2)
    trace = make_trace(wl.eval.token_ids, cfg)
    out = serve(wl, trace, cfg, {"batching": "static"})
    bpt = kv_bytes_per_token(wl.model)
    width, n = max(len(r.prompt) for r in trace), max(r.output_tokens for r in trace)
    assert out.kv_reserved_bytes == 4 * (width + n) * bpt
    assert out.kv_used_bytes == sum(len(r.prompt) + r.output_tokens for r in trace) * bpt


def test_an_unknown_engine_is_refused():
    wl = load_workload("tiny-llama")
    cfg = TraceConfig(requests=1, prompt_tokens=(8, 8), output_tokens=(2, 2))
    with pytest.raises(ValueError, match="batching='warp' is not a serving engine"):
        serve(wl, make_trace(wl.eval.token_ids, cfg), cfg, {"batching": "warp"})


def _spec_settings(wl, source: str) -> dict:
    spec = {"source": source, "gamma": 3, "ngram_max": 3, "layers": 1}
    if source == "model":
        spec["draft"] = load_workload("ref-lm-draft").model
    return spec


@pytest.mark.parametrize("workload,source", [("tiny-llama", "prompt_lookup"), ("tiny-llama", "self"),
                                             ("ref-lm", "prompt_lookup"), ("ref-lm", "model")])
def test_static_batches_with_batched_verification_serve_the_baselines_outputs(workload, source):
    """Static batches + a speculative setting: the batched draft-and-verify engine. Its outputs are
    the one-at-a-time greedy outputs, its per-request acceptance is the one-request loop's (the
    same proposals from the same contexts), pooled into α and the mean accepted length."""
    wl = load_workload(workload)
    cfg = TraceConfig(requests=5, max_concurrency=3, prompt_tokens=(20, 48), output_tokens=(3, 10), seed=7)
    trace = make_trace(wl.eval.token_ids, cfg)
    ref = [s.tokens for s in serve(wl, trace, cfg, {}).served]
    spec = _spec_settings(wl, source)
    alone = serve(wl, trace, cfg, {"speculative": spec})  # one request at a time through the same drafts
    out = serve(wl, trace, cfg, {"batching": "static", "speculative": spec})
    f = figures(out, ref)
    assert f["output_exact_fraction"] == 1.0 and figures(alone, ref)["output_exact_fraction"] == 1.0
    assert [s.accepted_per_round for s in out.spec] == [s.accepted_per_round for s in alone.spec]
    proposed, accepted, rounds = (sum(getattr(s, k) for s in out.spec) for k in ("proposed", "accepted", "rounds"))
    assert f["spec_acceptance_rate"] == pytest.approx(accepted / proposed if proposed else 0.0)
    assert f["spec_mean_accepted_length"] == pytest.approx((accepted + rounds) / rounds)
    for k in ("spec_acceptance_rate", "spec_mean_accepted_length"):
        assert f[k] == figures(alone, ref)[k], k
    assert 0 < out.kv_used_bytes <= out.kv_reserved_bytes
    assert all(len(s.stamps) == len(s.tokens) and s.stamps == sorted(s.stamps) for s in out.served)
    assert all(s.stamps[0] >= s.arrival for s in out.served)
    assert any("batched verification" in n for n in out.notes)


def test_batched_verification_counts_rejected_slots_as_reserved_kv():
    """The batch's cache is the (B, L) rectangle of K/V: prompt pads, rejected guesses and finished
    rows' slots are reserved but hold no token, so used < reserved; used is each request's prompt and
    output but the last token (never fed back)."""
    wl = load_workload("tiny-llama")
    cfg = TraceConfig(requests=4, max_concurrency=4, prompt_tokens=(10, 40), output_tokens=(2, 12), seed=2)
    trace = make_trace(wl.eval.token_ids, cfg)
    out = serve(wl, trace, cfg, {"batching": "static", "speculative": _spec_settings(wl, "self")})
    bpt = kv_bytes_per_token(wl.model)
    assert out.kv_used_bytes == pytest.approx(sum(len(r.prompt) + r.output_tokens - 1 for r in trace) * bpt)
    slots = out.kv_reserved_bytes / (4 * bpt)  # 4 rows × L slots
    assert slots == int(slots) >= max(len(r.prompt) for r in trace) + max(r.output_tokens for r in trace) - 1
    assert out.kv_used_bytes < out.kv_reserved_bytes


def test_continuous_batching_says_it_does_not_speculate():
    wl = load_workload("tiny-llama")
    cfg = TraceConfig(requests=2, max_concurrency=2, prompt_tokens=(8, 12), output_tokens=(2, 4), seed=1)
    trace = make_trace(wl.eval.token_ids, cfg)
    out = serve(wl, trace, cfg, {"batching": "continuous", "speculative": _spec_settings(wl, "prompt_lookup")})
    assert not out.spec and any("speculative setting is not applied" in n for n in out.notes)
