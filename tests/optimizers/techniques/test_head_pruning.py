"""head_pruning against its definition: the gradient importance is |∂L/∂ξ_h| (checked by finite
differences), the shrunk model computes exactly what the original does with the pruned heads'
gates at 0 (GQA query heads, whole K/V groups, BERT heads), the selection keeps the same count
per K/V group and at least one head, the KV cache shrinks only with kv_group, and the verdicts
name what to change."""
import pytest
import torch

from optimizers import registry
from optimizers.base import Target
from optimizers.quant.testing import check_config_roundtrip, tiny_lm_workload
from optimizers.techniques.head_pruning import _gated, attention_layers, choose, gradient_importance
from optimizers.workloads.base import Workload

T = registry.get("head_pruning")


def _gated_logits(model, kept: list[list[int]], batch):
    layers = attention_layers(model)
    gates = [torch.tensor([1.0 if h in keep else 0.0 for h in range(a.heads)]) for a, keep in zip(layers, kept)]
    handles = _gated(layers, gates)
    try:
        with torch.no_grad():
            return model(batch).logits
    finally:
        for h in handles:
            h.remove()


def test_gradient_importance_is_the_gate_derivative():
    wl = tiny_lm_workload(n_calib=1)
    layers = attention_layers(wl.model)
    got = gradient_importance(wl.model, layers, wl.calibration)
    batch, eps = wl.calibration[0], 1e-3
    for li, h in [(0, 1), (1, 3)]:
        losses = []
        for sign in (1, -1):
            gates = [torch.ones(a.heads) for a in layers]
            gates[li][h] += sign * eps
            handles = _gated(layers, gates)
            with torch.no_grad():
                losses.append(float(wl.model(input_ids=batch, labels=batch).loss))
            for hd in handles:
                hd.remove()
        assert got[li][h] == pytest.approx(abs(losses[0] - losses[1]) / (2 * eps), rel=0.05, abs=1e-5)


def test_choose_keeps_equal_counts_per_group_and_one_head():
    scores = [torch.tensor([0.1, 0.9, 0.8, 0.2]), torch.tensor([0.5, 0.6, 0.7, 0.9])]
    assert choose(scores, [2, 2], 0.5, "query", "layer") == [[1, 2], [1, 3]]
    assert choose(scores, [2, 2], 0.5, "kv_group", "layer") == [[0, 1], [2, 3]]
    assert choose([torch.tensor([0.1, 0.2]), torch.tensor([5.0, 6.0])], [1, 1], 0.75, "kv_group", "global") == [[1], [1]]


@pytest.mark.parametrize("unit, kv_after", [("query", 4), ("kv_group", 2)])
def test_shrunk_llama_equals_the_gated_original(unit, kv_after):
    wl = tiny_lm_workload(n_calib=2)
    rec = T.apply(wl, T.config({"amount": 0.5, "unit": unit, "scope": "layer"}))
    kept = [[int(h) for h in k] for k in rec.details["heads_kept"].values()]
    batch = wl.calibration[1]
    with torch.no_grad():
        got = rec.model(batch).logits
    assert torch.allclose(got, _gated_logits(wl.model, kept, batch), atol=1e-5)
    layers = attention_layers(rec.model)
    assert [a.heads for a in layers] == [2, 2] and sum(a.kv_heads for a in layers) == kv_after
    assert rec.model.config.num_attention_heads == 2 and rec.model.config.num_key_value_heads == kv_after // 2
    assert sum(p.numel() for p in rec.model.parameters()) < sum(p.numel() for p in wl.model.parameters())
    from transformers import DynamicCache
    cache = DynamicCache(config=rec.model.config)
    with torch.no_grad():
        rec.model(input_ids=batch, cache=cache, use_cache=True)
    assert cache.layers[0].keys.shape[1] == kv_after // 2  # the KV cache shrinks only when K/V heads go


def test_bert_heads_by_activation_importance():
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    model = BertModel(BertConfig(vocab_size=100, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                 intermediate_size=128)).eval()
    batches = [{"input_ids": torch.randint(0, 100, (2, 12)), "attention_mask": torch.ones(2, 12, dtype=torch.long)}]
    wl = Workload(name="tiny-bert", task="encoder", model=model, eval=None, calibration=batches, device="cpu", meta={})
    rec = T.apply(wl, T.config({"amount": 0.5}))
    kept = [[int(h) for h in k] for k in rec.details["heads_kept"].values()]
    assert sum(len(k) for k in kept) == 4 and all(kept)
    layers = attention_layers(model)
    gates = [torch.tensor([1.0 if h in k else 0.0 for h in range(4)]) for k in kept]
    handles = _gated(layers, gates)
    with torch.no_grad():
        want = model(**batches[0]).last_hidden_state
    for h in handles:
        h.remove()
    with torch.no_grad():
        assert torch.allclose(rec.model(**batches[0]).last_hidden_state, want, atol=1e-5)


def test_config_and_verdicts():
    check_config_roundtrip(T, {"amount": 0.3, "unit": "kv_group", "importance": "activation", "scope": "layer"})
    gqa = Target(task="causal_lm", attention_heads=(8, 2))
    assert T.check(gqa, T.config({})).runnable
    assert T.check(Target(task="causal_lm", attention_heads=(8, 2), has_calibration=False)).status == "refused"
    assert T.check(Target(task="causal_lm", attention_heads=(8, 1)), T.config({"unit": "kv_group"})).blame == "config"
    assert "kv_group" in T.check(Target(task="encoder", attention_heads=(12, 12)), T.config({"unit": "query"})).reason
    assert "activation" in T.check(Target(task="encoder", attention_heads=(12, 12)), T.config({"importance": "gradient"})).reason
    assert T.check(Target(task="vision"), T.config({})).status == "refused"
    assert T.check(Target(task="causal_lm", attention_heads=None), T.config({})).status == "refused"


def test_bad_inputs():
    from optimizers.quant.testing import _NoLinear

    wl = tiny_lm_workload()
    with pytest.raises(ValueError, match="no Llama-style .* attention layer"):
        T.apply(wl.with_model(_NoLinear()), T.config({}))
    with pytest.raises(ValueError, match="calibration"):
        T.apply(Workload(name="x", task="causal_lm", model=wl.model, eval=None, calibration=[], device="cpu", meta={}),
                T.config({}))
