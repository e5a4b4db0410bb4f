"""One metric vocabulary for code, DB and UI (DESIGN.md): name → unit and which
direction is better, plus the small metric functions, each checked against hand math."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class MetricSpec:
    unit: str
    better: str  # "lower" | "higher" | "closer_to_baseline"
    label: str


METRICS: dict[str, MetricSpec] = {
    "stored_bytes": MetricSpec("B", "lower", "stored bytes"),
    "bits_per_param": MetricSpec("bit", "lower", "stored bits per parameter (16 for a bf16 copy)"),
    "stored_bytes_vs_16bit": MetricSpec("×", "lower", "stored bytes ÷ a 16-bit copy of the same parameters"),
    "peak_memory_bytes": MetricSpec("B", "lower", "peak memory"),
    "latency_ms": MetricSpec("ms", "lower", "latency (median)"),
    "latency_spread_ms": MetricSpec("ms", "lower", "latency spread (p90 − p10)"),
    "prefill_tokens_per_s": MetricSpec("tok/s", "higher", "prefill throughput"),
    "decode_tokens_per_s": MetricSpec("tok/s", "higher", "decode throughput"),
    "perplexity": MetricSpec("", "lower", "perplexity"),
    "accuracy": MetricSpec("", "higher", "accuracy"),
    "kl_divergence": MetricSpec("nats/token", "lower", "KL(baseline ‖ model)"),
    "top1_agreement": MetricSpec("", "higher", "top-1 agreement with baseline"),
    "output_rel_error": MetricSpec("", "lower", "‖out − base‖ / ‖base‖"),
    "embedding_cosine": MetricSpec("", "higher", "cosine to baseline embeddings"),
    "similarity_spearman": MetricSpec("", "higher", "rank corr. of pairwise similarities vs baseline"),
    "pair_spearman": MetricSpec("", "higher", "rank corr. with labelled similarity pairs"),
    "sqnr_db": MetricSpec("dB", "higher", "signal-to-quantization-noise ratio"),
    "estimated_weight_bytes": MetricSpec("B", "lower", "estimated weight bytes"),
}


def spec(name: str) -> MetricSpec:
    if name in METRICS:
        return METRICS[name]
    if name.startswith("estimated_"):
        return MetricSpec("", "lower", name.replace("_", " "))
    return MetricSpec("", "lower", name.replace("_", " "))


def perplexity_from_nll(total_nll: float, n_tokens: int) -> float:
    """exp(mean negative log-likelihood per predicted token)."""
    if n_tokens <= 0:
        raise ValueError("perplexity needs at least one predicted token")
    return math.exp(total_nll / n_tokens)


def kl_divergence(ref_logits: torch.Tensor, logits: torch.Tensor) -> float:
    """Mean over positions of KL(p_ref ‖ p) in nats; logits (..., V)."""
    ref_lp = torch.log_softmax(ref_logits.double(), dim=-1)
    lp = torch.log_softmax(logits.double(), dim=-1)
    return float((ref_lp.exp() * (ref_lp - lp)).sum(-1).mean())


def top1_agreement(ref_logits: torch.Tensor, logits: torch.Tensor) -> float:
    return float((ref_logits.argmax(-1) == logits.argmax(-1)).double().mean())


def rel_error(ref: torch.Tensor, out: torch.Tensor) -> float:
    ref64, out64 = ref.double(), out.double()
    return float((out64 - ref64).norm() / ref64.norm().clamp(min=1e-30))


def sqnr_db(ref: torch.Tensor, out: torch.Tensor) -> float:
    """10·log10(‖ref‖² / ‖ref − out‖²); +inf when identical."""
    noise = (ref.double() - out.double()).pow(2).sum()
    if noise == 0:
        return math.inf
    return float(10 * torch.log10(ref.double().pow(2).sum() / noise))


def mean_cosine(ref: torch.Tensor, out: torch.Tensor) -> float:
    """Mean row-wise cosine similarity of two (N, D) embedding matrices."""
    return float(torch.nn.functional.cosine_similarity(ref.double(), out.double(), dim=-1).mean())


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    """Spearman rank correlation of two 1-D tensors (average ranks for ties)."""
    def ranks(x: torch.Tensor) -> torch.Tensor:
        x = x.double().flatten()
        order = torch.argsort(x)
        r = torch.empty_like(x)
        r[order] = torch.arange(len(x), dtype=torch.float64)
        for v in torch.unique(x):  # average ties
            m = x == v
            if m.sum() > 1:
                r[m] = r[m].mean()
        return r

    ra, rb = ranks(a), ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    return float((ra * rb).sum() / (ra.norm() * rb.norm()).clamp(min=1e-30))
