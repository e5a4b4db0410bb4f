"""The reference causal LMs: ``ref-lm`` (Llama architecture with GQA, RMSNorm, SwiGLU, RoPE)
and its much smaller draft ``ref-lm-draft`` (same tokenizer), both trained by
``scripts/train_ref_lm.py`` on the Python standard library and committed as fp16
safetensors. Loaded offline in fp32; judged by perplexity over committed held-out tokens."""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import torch

from optimizers.workloads.base import LMEval, Workload, WorkloadError
from optimizers.workloads.corpus import train_split

ASSETS = Path(__file__).resolve().parent / "assets"
TOKENS_DIR = ASSETS / "ref-lm"  # tokenizer, held-out test tokens, calibration tokens, metrics.json
CONFIG_KEYS = (
    "model_type", "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
    "num_attention_heads", "num_key_value_heads", "head_dim", "max_position_embeddings",
    "rms_norm_eps", "rope_theta", "rope_parameters", "tie_word_embeddings", "hidden_act",
)
EVAL_WINDOW = 256
EVAL_MAX_WINDOWS = 64  # 64 × 256 = 16 k held-out tokens per quality measurement


def _read_tokens(name: str) -> torch.Tensor:
    from safetensors.torch import load_file

    path = TOKENS_DIR / name
    if not path.exists():
        raise WorkloadError(f"{path} is missing; run `python scripts/train_ref_lm.py tokenizer` to recreate it")
    return load_file(path)["token_ids"].to(torch.int64)


def committed_metrics(name: str = "ref-lm") -> dict:
    """The figures recorded when the weights were trained (``assets/ref-lm/metrics.json``)."""
    path = TOKENS_DIR / "metrics.json"
    return json.loads(path.read_text()).get(name, {}) if path.exists() else {}


@torch.no_grad()
def perplexity(
    model: torch.nn.Module,
    token_ids: torch.Tensor,
    window: int = EVAL_WINDOW,
    stride: int = EVAL_WINDOW,
    max_windows: int | None = EVAL_MAX_WINDOWS,
    batch_size: int = 8,
) -> float:
    """exp(mean next-token NLL) over windows of ``window`` tokens starting every ``stride`` tokens.

    The first window scores all its predictions; later windows score only their last
    ``stride`` tokens (so each token is scored once, with ``window - stride`` tokens of
    extra context when ``stride < window``). Only full windows are used.
    """
    if not 0 < stride <= window:
        raise ValueError(f"stride={stride} must be in 1..window={window}")
    ids = token_ids.reshape(-1).to(torch.int64)
    starts = list(range(0, len(ids) - window + 1, stride))[: max_windows or None]
    if not starts:
        raise ValueError(f"need at least window={window} tokens, got {len(ids)}")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    nll, count = 0.0, 0
    for i in range(0, len(starts), batch_size):
        chunk = starts[i : i + batch_size]
        x = torch.stack([ids[s : s + window] for s in chunk]).to(device)  # (B, T)
        logits = model(input_ids=x).logits[:, :-1].float()  # (B, T-1, V)
        tok_nll = torch.nn.functional.cross_entropy(
            logits.transpose(1, 2), x[:, 1:], reduction="none"
        )  # (B, T-1)
        for b, s in enumerate(chunk):
            scored = tok_nll[b] if s == 0 else tok_nll[b, -stride:]
            nll += scored.sum().item()
            count += scored.numel()
    model.train(was_training)
    return math.exp(nll / count)


def load(name: str = "ref-lm", device: str = "cpu") -> Workload:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    model_dir = ASSETS / name
    if not (model_dir / "model.safetensors").exists():
        raise WorkloadError(
            f"{model_dir / 'model.safetensors'} is missing; train it with "
            f"`python scripts/train_ref_lm.py train --model {name}`"
        )
    model = AutoModelForCausalLM.from_pretrained(
        model_dir, dtype=torch.float32, attn_implementation="sdpa", use_safetensors=True, local_files_only=True
    )
    model = model.to(device).eval()
    tokenizer = AutoTokenizer.from_pretrained(TOKENS_DIR, local_files_only=True)
    calib = _read_tokens("calibration_tokens.safetensors")  # (32, 256)
    cfg = model.config.to_dict()
    meta = {
        "config": {k: cfg[k] for k in CONFIG_KEYS if k in cfg},
        "family": "llama",
        "source": str(model_dir),
        "committed_metrics": committed_metrics(name),
    }
    if name == "ref-lm":
        meta["draft"] = "ref-lm-draft"
    return Workload(
        name=name,
        task="causal_lm",
        model=model,
        eval=LMEval(
            token_ids=_read_tokens("test_tokens.safetensors"),
            window=EVAL_WINDOW,
            stride=EVAL_WINDOW,
            max_windows=EVAL_MAX_WINDOWS,
        ),
        calibration=[row.unsqueeze(0) for row in calib],  # each (1, 256) int64
        tokenizer=tokenizer,
        device=device,
        meta=meta,
        train=train_split(tokenizer),
    )


WORKLOADS = {
    "ref-lm": lambda device="cpu": load("ref-lm", device),
    "ref-lm-draft": lambda device="cpu": load("ref-lm-draft", device),
}
TASK = "causal_lm"  # what every workload of this module is (read before loading, e.g. to pick a scenario)
