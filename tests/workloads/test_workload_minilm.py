import torch

from optimizers.workloads.base import EncoderEval
from optimizers.workloads.minilm import embed


def test_minilm_reproduces_the_published_cosine(minilm):
    e = embed(minilm.model, minilm.tokenizer, ["A man is eating food.", "A man is eating a piece of bread."])
    assert e.shape == (2, 384)
    assert torch.allclose(e.norm(dim=-1), torch.ones(2), atol=1e-5)
    assert abs((e[0] @ e[1]).item() - 0.7553) < 5e-4  # observed 0.75534


def test_minilm_eval_set_and_calibration(minilm):
    ev = minilm.eval
    assert isinstance(ev, EncoderEval) and minilm.task == "encoder"
    assert len(ev.sentences) >= 60 and len(set(ev.sentences)) == len(ev.sentences)
    assert len(ev.pairs) >= 30 and all(0.0 <= g <= 1.0 for _, _, g in ev.pairs)
    batch = minilm.calibration[0]
    assert set(batch) == {"input_ids", "attention_mask"} and batch["input_ids"].dtype == torch.int64
    assert minilm.model(**batch).last_hidden_state.shape[-1] == 384


def test_minilm_similarity_tracks_the_labels(minilm):
    from scipy.stats import spearmanr

    pairs = minilm.eval.pairs
    a = embed(minilm.model, minilm.tokenizer, [p[0] for p in pairs])
    b = embed(minilm.model, minilm.tokenizer, [p[1] for p in pairs])
    rho = spearmanr((a * b).sum(-1).numpy(), [p[2] for p in pairs]).statistic
    assert rho > 0.7  # observed 0.763
