"""tied_embeddings: config, verdicts (an already tied model is advice-only "already in the model",
a vision model refused), the head becomes the embedding's Parameter with the chosen values,
stored bytes and parameters drop by exactly vocab × hidden, and the tie survives save / reload."""
import pydantic
import pytest
import torch

from optimizers import registry
from optimizers.base import Target
from optimizers.measure import parameter_count, stored_bytes
from optimizers.quant.testing import check_config_roundtrip, logits, tiny_lm_workload

T = registry.get("tied_embeddings")


def test_config_and_verdicts():
    check_config_roundtrip(T, {"source": "mean"})
    with pytest.raises(pydantic.ValidationError, match="source"):
        T.config({"source": "both"})
    untied = Target.of(tiny_lm_workload())
    assert untied.tied_embeddings is False
    v = T.check(untied, T.config())
    assert v.status == "runs" and "quality cost" in v.reason
    v = T.check(Target.of(tiny_lm_workload(tie_word_embeddings=True)), T.config())
    assert v.status == "advice_only" and "already tied" in v.reason and v.reason.startswith("already in the model")
    assert T.check(Target(task="vision"), T.config()).status == "refused"
    assert T.check(Target(task="causal_lm", tied_embeddings=False, head_linear=False), T.config()).status == "refused"


@pytest.mark.parametrize("source", ["embedding", "head", "mean"])
def test_head_shares_the_embedding_and_bytes_drop(source):
    wl = tiny_lm_workload()
    emb0, head0 = wl.model.model.embed_tokens.weight.clone(), wl.model.lm_head.weight.clone()
    rec = T.apply(wl, T.config({"source": source}))
    model = rec.model
    assert model.lm_head.weight is model.model.embed_tokens.weight and model.config.tie_word_embeddings
    want = {"embedding": emb0, "head": head0, "mean": (emb0 + head0) / 2}[source]
    assert torch.allclose(model.lm_head.weight, want)
    assert stored_bytes(wl.model) - stored_bytes(model) == 512 * 128 * 4  # vocab × hidden × fp32, counted once
    assert parameter_count(wl.model) - parameter_count(model) == 512 * 128
    assert rec.diagnostics["tied_bytes_saved"] == 512 * 128 * 4 and rec.workload.meta["config"]["tie_word_embeddings"]
    assert logits(rec.workload).shape == logits(wl).shape
    assert wl.model.lm_head.weight is not wl.model.model.embed_tokens.weight  # input untouched
    with pytest.raises(ValueError, match="already tied"):
        T.apply(rec.workload, T.config())


def test_tie_survives_save_and_reload(tmp_path):
    from transformers import AutoModelForCausalLM

    model = T.apply(tiny_lm_workload(), T.config()).model
    model.save_pretrained(tmp_path)
    again = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert again.lm_head.weight.data_ptr() == again.model.embed_tokens.weight.data_ptr()
    assert torch.equal(again.lm_head.weight, model.lm_head.weight)
