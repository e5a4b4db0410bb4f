"""albert_sharing: config (exactly one of groups / share), verdicts, runs of consecutive blocks share
the same tensors set to their mean, parameters and stored bytes drop by the blocks removed, the
forward (and cached generation, each block keeping its own cache index) still runs, groups equal to
the depth is the identity, and a BERT encoder shares too."""
import pydantic
import pytest
import torch

from optimizers import registry
from optimizers.base import Target
from optimizers.measure import parameter_count, stored_bytes
from optimizers.quant.testing import check_config_roundtrip, logits, tiny_lm_workload
from optimizers.techniques.albert_sharing import CAVEAT, runs
from optimizers.workloads.base import EncoderEval, Workload

T = registry.get("albert_sharing")


def block_params(model, i):
    return dict(model.model.layers[i].named_parameters())


def test_config_runs_and_verdicts():
    check_config_roundtrip(T, {"groups": 2, "share": None})
    check_config_roundtrip(T, {"share": "all"})
    with pytest.raises(pydantic.ValidationError, match="exactly one"):
        T.config({"groups": 2})  # share defaults to adjacent_pairs: both set
    assert runs(5, 2) == [[0, 1, 2], [3, 4]] and runs(4, 4) == [[0], [1], [2], [3]] and runs(3, 1) == [[0, 1, 2]]
    assert T.config().distinct(5) == 3 and T.config({"share": "all"}).distinct(5) == 1
    v = T.check(Target.of(tiny_lm_workload()), T.config())
    assert v.status == "runs" and v.reason == CAVEAT
    v = T.check(Target(task="causal_lm", blocks=2), T.config({"groups": 3, "share": None}))
    assert v.status == "refused" and v.blame == "config" and "groups=3" in v.reason
    assert T.check(Target(task="vision"), T.config()).status == "refused"
    assert T.check(Target(task="causal_lm"), T.config()).status == "refused"  # no blocks


def test_pairs_share_the_same_tensors_at_their_mean():
    wl = tiny_lm_workload(num_hidden_layers=4)
    rec = T.apply(wl, T.config({"groups": 2, "share": None}))
    model = rec.model
    for a, b in ((0, 1), (2, 3)):
        shared, other = block_params(model, a), block_params(model, b)
        assert all(shared[k] is other[k] for k in shared)
        k = "mlp.up_proj.weight"
        assert torch.allclose(shared[k], (block_params(wl.model, a)[k] + block_params(wl.model, b)[k]) / 2)
    assert block_params(model, 1)["mlp.up_proj.weight"] is not block_params(model, 2)["mlp.up_proj.weight"]
    per_block = sum(p.numel() for p in wl.model.model.layers[0].parameters())
    assert parameter_count(wl.model) - parameter_count(model) == 2 * per_block
    assert stored_bytes(wl.model) - stored_bytes(model) == 2 * per_block * 4
    assert [layer.self_attn.layer_idx for layer in model.model.layers] == [0, 1, 2, 3]  # own KV-cache slots
    assert logits(rec.workload).shape == logits(wl).shape
    prompt = wl.calibration[0][:, :8]
    cached = model.generate(prompt, max_new_tokens=4, do_sample=False, use_cache=True)
    assert torch.equal(cached, model.generate(prompt, max_new_tokens=4, do_sample=False, use_cache=False))
    assert rec.details["runs"] == [[0, 1], [2, 3]] and "4 blocks → 2 distinct" in rec.notes[0]


def test_groups_equal_to_depth_is_the_identity():
    wl = tiny_lm_workload()
    same = T.apply(wl, T.config({"groups": 2, "share": None}))
    assert torch.equal(logits(same.workload), logits(wl)) and stored_bytes(same.model) == stored_bytes(wl.model)


def test_bert_encoder_shares_all_blocks():
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=128, hidden_size=32, num_hidden_layers=3, num_attention_heads=2, intermediate_size=64)
    model = BertModel(cfg).eval()
    wl = Workload(name="tiny-bert", task="encoder", model=model, eval=EncoderEval(sentences=["a"]), calibration=[])
    rec = T.apply(wl, T.config({"share": "all"}))
    layers = rec.model.encoder.layer
    assert layers[0].attention.self.query.weight is layers[2].attention.self.query.weight
    per_block = sum(p.numel() for p in model.encoder.layer[0].parameters())
    assert parameter_count(model) - parameter_count(rec.model) == 2 * per_block
    ids = torch.randint(0, 128, (2, 7))
    assert rec.model(input_ids=ids).last_hidden_state.shape == (2, 7, 32)
