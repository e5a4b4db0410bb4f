"""A tiny Llama-architecture causal LM built from a LlamaConfig in code (GQA, RMSNorm,
SwiGLU, RoPE) with random weights and a synthetic token stream: the fast fixture for
tests of the pipeline. Quality figures on it are meaningful only as deltas."""
from __future__ import annotations

import torch

from optimizers.workloads.base import LMEval, LMTrain, Workload

TINY_CONFIG = dict(
    vocab_size=512,
    hidden_size=128,
    intermediate_size=352,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=512,
    rms_norm_eps=1e-6,
    tie_word_embeddings=False,
)


def build_tiny_llama(seed: int = 0, **overrides) -> torch.nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(**{**TINY_CONFIG, **overrides})
    cfg._attn_implementation = "sdpa"
    return LlamaForCausalLM(cfg).eval()


def markov_stream(vocab: int, n: int, seed: int, fan_out: int = 4) -> torch.Tensor:
    """A learnable synthetic stream for training tests: each token is followed by one of
    ``fan_out`` fixed successors (uniform random tokens would leave no loss to lower)."""
    g = torch.Generator().manual_seed(seed)
    successors = torch.randint(0, vocab, (vocab, fan_out), generator=g)
    picks = torch.randint(0, fan_out, (n,), generator=g)
    out = torch.empty(n, dtype=torch.int64)
    out[0] = 0
    for i in range(1, n):
        out[i] = successors[out[i - 1], picks[i]]
    return out


def load(device: str = "cpu") -> Workload:
    model = build_tiny_llama().to(device)
    g = torch.Generator().manual_seed(1)
    stream = torch.randint(0, TINY_CONFIG["vocab_size"], (4096,), generator=g)
    calib = [stream[i : i + 128].unsqueeze(0) for i in range(0, 1024, 128)]
    return Workload(
        name="tiny-llama",
        task="causal_lm",
        model=model,
        eval=LMEval(token_ids=stream[1024:], window=128, stride=128, max_windows=8, prompt_len=32, decode_tokens=16),
        calibration=calib,
        device=device,
        meta={"config": dict(TINY_CONFIG), "family": "llama"},
        train=lambda: LMTrain(*markov_stream(TINY_CONFIG["vocab_size"], 16384, seed=2).split([12288, 4096])),
    )


WORKLOADS = {"tiny-llama": load}
TASK = "causal_lm"  # what every workload of this module is (read before loading, e.g. to pick a scenario)
