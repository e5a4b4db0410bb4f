"""speculative_decoding: config, verdicts, draft resolution and errors, and the harness's
generate() path: assisted greedy tokens identical to plain greedy (greedy_match 1.0), both
decode rates measured in the same run, the draft's bytes reported."""
import pytest
import torch

from optimizers import registry
from optimizers.base import Target
from optimizers.measure import SpeedSettings, measure
from optimizers.quant.testing import check_config_roundtrip
from optimizers.workloads import tiny_llama

T = registry.get("speculative_decoding")


def _with_draft():
    wl = tiny_llama.load()
    draft = tiny_llama.build_tiny_llama(seed=1, num_hidden_layers=1, hidden_size=64, intermediate_size=128,
                                        num_attention_heads=2, num_key_value_heads=1)
    return wl, draft


def test_config_and_verdicts():
    check_config_roundtrip(T, {"draft": "ref-lm-draft", "num_assistant_tokens": 3, "schedule": "constant"})
    assert T.check(Target(device="cpu", task="causal_lm", draft="ref-lm-draft")).status == "runs"
    assert T.check(Target(device="cpu", task="vision")).status == "refused"
    # a workload without a draft: the step is skipped there; a named draft that does not exist is
    # the playbook's fault, refused before a run starts
    v = T.check(Target(device="cpu", task="causal_lm"))
    assert v.status == "refused" and v.blame == "target" and "needs a draft" in v.reason
    v = T.check(Target(device="cpu", task="causal_lm"), T.config({"draft": "no-such-draft"}))
    assert v.status == "refused" and v.blame == "config" and "not a built-in workload" in v.reason
    assert T.run_settings == {"decode_loop": "generate"}  # the baseline decodes through generate() too


def test_errors_say_what_to_do():
    wl, draft = _with_draft()
    with pytest.raises(ValueError, match="needs a draft model"):
        T.apply(wl, T.config())
    small_vocab = tiny_llama.build_tiny_llama(seed=1, vocab_size=256, num_hidden_layers=1)
    with pytest.raises(ValueError, match="share the tokenizer"):
        T.apply(wl.with_model(wl.model, draft=small_vocab), T.config())


def test_generate_path_is_lossless_and_measured():
    wl, draft = _with_draft()
    rec = T.apply(wl.with_model(wl.model, draft=draft), T.config({"num_assistant_tokens": 4}))
    out = rec.workload
    assert out.model is wl.model and rec.settings["decoding"]["assistant_model"] is draft
    m = measure(out, speed=True, memory=False, settings=SpeedSettings(warmup=1, repeats=2),
                runtime={"decode_loop": "generate", **rec.settings})
    assert m.metrics["greedy_match"] == 1.0  # assisted greedy == plain greedy, token for token
    assert m.metrics["tokens_per_target_forward"] >= 1.0  # a draft never costs the target extra passes per token
    plain = measure(out, speed=True, memory=False, settings=SpeedSettings(warmup=1, repeats=2),
                    runtime={"decode_loop": "generate"})  # what the baseline of such a run measures
    assert plain.metrics["tokens_per_target_forward"] == 1.0 and "greedy_match" not in plain.metrics
    assert m.metrics["decode_tokens_per_s"] > 0 and m.metrics["decode_tokens_per_s_plain_generate"] > 0
    assert m.metrics["assistant_stored_bytes"] == sum(t.numel() * 4 for t in draft.state_dict().values())
