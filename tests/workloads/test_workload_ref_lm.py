import math

import pytest
import torch

from optimizers.workloads import ref_lm
from optimizers.workloads.base import LMEval


def test_ref_lm_loads_offline_with_llama_gqa_config(lm):
    wl = lm
    cfg = wl.meta["config"]
    assert wl.task == "causal_lm" and wl.meta["family"] == "llama" and wl.meta["draft"] == "ref-lm-draft"
    assert cfg["num_key_value_heads"] < cfg["num_attention_heads"]  # GQA
    assert next(wl.model.parameters()).dtype == torch.float32
    assert wl.model.config._attn_implementation == "sdpa"
    assert isinstance(wl.eval, LMEval) and wl.eval.token_ids.dtype == torch.int64
    assert len(wl.eval.token_ids) >= wl.eval.window * wl.eval.max_windows
    assert wl.calibration and all(b.shape == (1, 256) and b.dtype == torch.int64 for b in wl.calibration)
    assert int(wl.eval.token_ids.max()) < cfg["vocab_size"]


def test_ref_lm_perplexity_matches_committed_figure(lm):
    wl = lm
    committed = lm.meta["committed_metrics"]["test_ppl_eval_protocol"]
    ppl = protocol_ppl(wl)
    assert abs(ppl / committed - 1) < 0.005, (ppl, committed)  # same weights and tokens: equal up to float noise


def protocol_ppl(wl):
    return ref_lm.perplexity(wl.model, wl.eval.token_ids, wl.eval.window, wl.eval.stride, wl.eval.max_windows)


def test_tokenizer_round_trips_python_source(lm):
    src = "def f(x):\n    return {'a': [x, 1.5]}\n"
    tok = lm.tokenizer
    assert tok.decode(tok(src, add_special_tokens=False)["input_ids"]) == src
    assert len(tok) == lm.meta["config"]["vocab_size"]


def test_draft_is_much_smaller_and_shares_the_tokenizer(lm):
    from optimizers.workloads import load_workload

    draft = load_workload("ref-lm-draft")
    n = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert n(draft.model) < n(lm.model) / 2
    assert draft.meta["config"]["vocab_size"] == lm.meta["config"]["vocab_size"]
    assert torch.equal(draft.eval.token_ids, lm.eval.token_ids)
    ppl = protocol_ppl(draft)
    assert abs(ppl / draft.meta["committed_metrics"]["test_ppl_eval_protocol"] - 1) < 0.005


def test_perplexity_by_hand_on_a_uniform_model():
    class Uniform(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def forward(self, input_ids):
            return type("Out", (), {"logits": torch.zeros(*input_ids.shape, 50)})

    ids = torch.arange(1000) % 50
    assert ref_lm.perplexity(Uniform(), ids, window=100, stride=50, max_windows=None) == pytest.approx(50.0)
    with pytest.raises(ValueError, match="stride"):
        ref_lm.perplexity(Uniform(), ids, window=10, stride=20)
    assert math.isfinite(ref_lm.perplexity(Uniform(), ids, window=100, stride=100, max_windows=3))
