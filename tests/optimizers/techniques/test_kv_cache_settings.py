"""kv_cache_quantization and attention_sinks as runtime settings of the inference harness: the
model is unchanged, perplexity is measured through the cache (int8 costs little, int4 more, a
short sink window more still), the KV bytes shrink as computed by hand, decode runs through the
cache, and figures not measured through the cache are not reported."""
import pytest

from optimizers import registry
from optimizers.measure import SpeedSettings, measure
from optimizers.workloads import load_workload

Q, S = registry.get("kv_cache_quantization"), registry.get("attention_sinks")
FAST = SpeedSettings(warmup=1, repeats=2, min_time_s=0)


@pytest.fixture(scope="module")
def runs():
    wl = load_workload("ref-lm")
    base = measure(wl, memory=False, settings=FAST)
    out = {}
    for name, tech, params in (("int8", Q, {"bits": 8}), ("int4", Q, {"bits": 4}), ("sinks", S, {"window": 60})):
        rec = tech.apply(wl, tech.config(params))
        assert rec.workload.model is wl.model
        out[name] = measure(rec.workload, reference=base, memory=False, settings=FAST, runtime=rec.settings).metrics
    return wl, base.metrics, out


def test_quality_cost_is_measured_through_the_cache(runs):
    _, base, out = runs
    assert out["int8"]["perplexity"] == pytest.approx(base["perplexity"], rel=0.01)  # observed +0.03 % on ref-lm
    assert out["int4"]["perplexity"] > out["int8"]["perplexity"]
    assert out["sinks"]["perplexity"] > base["perplexity"]  # it forgets the middle of each 256-token window
    for m in out.values():
        assert "kl_divergence" not in m and "answer_accuracy" not in m and m["decode_tokens_per_s"] > 0


def test_kv_bytes_shrink_as_computed_by_hand(runs):
    wl, base, out = runs
    c = wl.model.config
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    tokens, cells = wl.eval.window, c.num_hidden_layers * c.num_key_value_heads * 2  # K and V per layer, head
    assert base["kv_cache_bytes"] == tokens * cells * head_dim * 4  # fp32
    assert base["kv_cache_bytes_vs_16bit"] == 2.0
    assert out["int8"]["kv_cache_bytes"] == tokens * cells * (head_dim + 2)  # int8 codes + a float16 scale
    assert out["int4"]["kv_cache_bytes"] == tokens * cells * (head_dim // 2 + 2)
    assert out["int8"]["kv_cache_bytes_vs_16bit"] == pytest.approx((head_dim + 2) / (2 * head_dim))
    # sinks: 4 + 60 tokens kept whatever the window length, + one int64 position per token and layer,
    # shared by the 4 windows fed together (so a quarter of it per sequence)
    assert out["sinks"]["kv_cache_bytes"] == 64 * (cells * head_dim * 4 + c.num_hidden_layers * 8 / 4)


def test_the_kv_settings_are_inference_settings():
    from jobs import submit
    from playbooks.errors import PlaybookError

    pb = {"name": "k", "title": "k", "steps": [{"technique": "kv_cache_quantization"}]}
    assert submit.validate_request(pb, "ref-lm", "cpu", scenario="inference").scenario == "inference"
    assert submit.validate_request(pb, "ref-lm", "cpu", scenario="serving").scenario == "serving"  # skipped there
    with pytest.raises(PlaybookError, match="window"):
        submit.validate_request({"name": "k", "title": "k", "steps": [{"technique": "attention_sinks",
                                                                      "params": {"window": 0}}]}, "ref-lm", "cpu")
