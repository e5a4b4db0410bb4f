"""speculative_decoding: config, verdicts, draft resolution and errors, and the harness's
measurement: the draft-and-verify loop's tokens equal the lean greedy loop's (greedy_match 1.0)
for each draft source, both decode rates measured in the same call, α / accepted length / c and
the analytical speed-up stored beside the measured one."""
import pytest

from optimizers import registry
from optimizers.base import Target
from optimizers.decoding.speculative import analytical_speedup
from optimizers.measure import SpeedSettings, measure
from optimizers.quant.testing import check_config_roundtrip
from optimizers.workloads import load_workload, tiny_llama

T = registry.get("speculative_decoding")


def test_config_and_verdicts():
    check_config_roundtrip(T, {"source": "self", "gamma": 3, "layers": 1})
    assert T.check(Target(device="cpu", task="causal_lm", draft="ref-lm-draft")).status == "runs"
    assert T.check(Target(device="cpu", task="vision")).status == "refused"
    # a workload without a draft: source=model is skipped there; the model-free sources run anywhere
    v = T.check(Target(device="cpu", task="causal_lm"))
    assert v.status == "refused" and v.blame == "target" and "needs a draft" in v.reason
    assert T.check(Target(device="cpu", task="causal_lm"), T.config({"source": "prompt_lookup"})).runnable
    v = T.check(Target(device="cpu", task="causal_lm"), T.config({"draft": "no-such-draft"}))
    assert v.status == "refused" and v.blame == "config" and "not a built-in workload" in v.reason
    assert T.run_settings == {}  # the baseline's lean loop is the reference: nothing to change from the start


def test_errors_say_what_to_do():
    wl = tiny_llama.load()
    with pytest.raises(ValueError, match="needs a draft model"):
        T.apply(wl, T.config())
    small_vocab = tiny_llama.build_tiny_llama(seed=1, vocab_size=256, num_hidden_layers=1)
    with pytest.raises(ValueError, match="share the tokenizer"):
        T.apply(wl.with_model(wl.model, draft=small_vocab), T.config())
    with pytest.raises(ValueError, match="params.layers=2 must be below the target's 2 layers"):
        T.apply(wl, T.config({"source": "self", "layers": 2}))


@pytest.mark.parametrize("params", [{"source": "model", "gamma": 3}, {"source": "self", "gamma": 2},
                                    {"source": "prompt_lookup", "gamma": 4}])
def test_each_source_is_lossless_and_measured_against_the_lean_loop(params):
    wl = load_workload("ref-lm")
    rec = T.apply(wl, T.config(params))
    assert rec.workload.model is wl.model  # the target is shared, not copied
    m = measure(rec.workload, speed=True, memory=False, settings=SpeedSettings(warmup=1, repeats=2),
                runtime=rec.settings).metrics
    assert m["greedy_match"] == 1.0
    assert m["decode_tokens_per_s"] > 0 and m["decode_tokens_per_s_plain"] > 0
    assert m["spec_speedup"] == pytest.approx(m["decode_tokens_per_s"] / m["decode_tokens_per_s_plain"])
    assert 0.0 <= m["spec_acceptance_rate"] <= 1.0
    assert 1.0 <= m["spec_mean_accepted_length"] <= params["gamma"] + 1
    assert m["spec_speedup_analytical"] == pytest.approx(
        analytical_speedup(m["spec_acceptance_rate"], params["gamma"], m["spec_cost_ratio"]))
    if params["source"] == "model":
        draft = rec.settings["speculative"]["draft"]
        assert m["assistant_stored_bytes"] == sum(t.numel() * 4 for t in draft.state_dict().values())


def test_the_setting_serves_static_batches_with_batched_verification():
    """In the serving scenario the step's settings pick the batched draft-and-verify engine
    (static batches, one verification forward per round); the inference scenario reads only
    ``speculative``."""
    rec = T.apply(tiny_llama.load(), T.config({"source": "prompt_lookup", "gamma": 2}))
    assert rec.settings["batching"] == "static"
    assert rec.settings["speculative"] == {"source": "prompt_lookup", "gamma": 2, "ngram_max": 3}
