"""One metric vocabulary for code, DB and UI (DESIGN.md): name → unit and which
direction is better, plus the small metric functions, each checked against hand math."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported by the functions that need it: the vocabulary is read by the web
    import torch   # pages, whose first load should not pay torch's 2 s import


def __getattr__(name: str):
    """``rel_error`` and ``sqnr_db``: the one definition is in quant.errors, re-exported on first use."""
    if name in ("rel_error", "sqnr_db"):
        from quant import errors

        return getattr(errors, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
    "answer_accuracy": MetricSpec("", "higher", "greedy answers containing the accepted answer (factual prompts)"),
    "kl_divergence": MetricSpec("nats/token", "lower", "KL(baseline ‖ model)"),
    "top1_agreement": MetricSpec("", "higher", "top-1 agreement with baseline"),
    "output_rel_error": MetricSpec("", "lower", "‖out − base‖ / ‖base‖"),
    "embedding_cosine": MetricSpec("", "higher", "cosine to baseline embeddings"),
    "similarity_spearman": MetricSpec("", "higher", "rank corr. of pairwise similarities vs baseline"),
    "pair_spearman": MetricSpec("", "higher", "rank corr. with labelled similarity pairs"),
    "sqnr_db": MetricSpec("dB", "higher", "signal-to-quantization-noise ratio"),
    "estimated_weight_bytes": MetricSpec("B", "lower", "estimated weight bytes"),
    "decode_bandwidth_gb_per_s": MetricSpec("GB/s", "higher", "decode bandwidth achieved (stored bytes × tok/s, computed)"),
    "copy_gb_per_s": MetricSpec("GB/s", "higher", "device copy bandwidth (measured ceiling)"),
    "decode_bandwidth_fraction": MetricSpec("", "higher", "decode bandwidth ÷ copy bandwidth"),
    # measured by a speculative step (draft-and-verify against the lean greedy loop, same measurement)
    "decode_tokens_per_s_plain": MetricSpec("tok/s", "higher", "decode throughput of the lean greedy loop, same call"),
    "greedy_match": MetricSpec("", "higher", "1 when the strategy's tokens equal plain greedy decoding's"),
    "spec_speedup": MetricSpec("×", "higher", "speculative decode speed ÷ lean greedy, measured"),
    "spec_speedup_analytical": MetricSpec("×", "higher", "(1 − α^(γ+1)) / ((1 − α)(γc + 1)) from the measured α, c"),
    "spec_acceptance_rate": MetricSpec("", "higher", "α: accepted ÷ proposed draft tokens"),
    "spec_mean_accepted_length": MetricSpec("tok", "higher", "tokens emitted per verification round"),
    "spec_cost_ratio": MetricSpec("", "lower", "c: one draft token's time ÷ one target round's"),
    "spec_gamma": MetricSpec("tok", "closer_to_baseline", "draft tokens proposed per round"),
    "assistant_stored_bytes": MetricSpec("B", "lower", "stored bytes of the draft model"),
    "kv_cache_bytes": MetricSpec("B", "lower", "KV-cache bytes for one evaluation window (peak, measured)"),
    "kv_cache_bytes_vs_16bit": MetricSpec("×", "lower", "KV-cache bytes ÷ a 16-bit cache of the same tokens"),
    # the serving scenario (a seeded request trace; latency from each request's arrival)
    "throughput_tokens_per_s": MetricSpec("tok/s", "higher", "output tokens per second over the trace's makespan"),
    "requests_per_s": MetricSpec("req/s", "higher", "requests completed per second"),
    "ttft_ms_p50": MetricSpec("ms", "lower", "time to first token, median (queueing included)"),
    "ttft_ms_p95": MetricSpec("ms", "lower", "time to first token, p95"),
    "tpot_ms_p50": MetricSpec("ms", "lower", "time per output token after the first, median"),
    "tpot_ms_p95": MetricSpec("ms", "lower", "time per output token, p95"),
    "e2e_ms_p50": MetricSpec("ms", "lower", "request latency arrival → last token, median"),
    "e2e_ms_p95": MetricSpec("ms", "lower", "request latency arrival → last token, p95"),
    "kv_cache_bytes_reserved": MetricSpec("B", "lower", "KV bytes allocated to live requests at the peak"),
    "kv_cache_bytes_used": MetricSpec("B", "lower", "KV bytes holding tokens at that peak"),
    "kv_cache_used_fraction": MetricSpec("", "higher", "KV bytes holding tokens ÷ bytes allocated to requests"),
    "kv_cache_pool_bytes": MetricSpec("B", "lower", "KV pool the engine allocated up front"),
    "output_exact_fraction": MetricSpec("", "higher", "requests whose tokens equal the baseline's exactly"),
    "output_prefix_agreement": MetricSpec("", "higher", "mean fraction of each request's tokens before the first "
                                                        "difference from the baseline"),
    "serving_makespan_s": MetricSpec("s", "lower", "first arrival → last token of the trace"),
    "trace_requests": MetricSpec("", "closer_to_baseline", "requests in the trace"),
    "trace_max_concurrency": MetricSpec("", "closer_to_baseline", "requests admitted at once"),
    # the training scenario (K steps of a recipe on the same seeded batches; memory from torch's accounting)
    "train_step_ms": MetricSpec("ms", "lower", "optimizer step time, median of the timed steps"),
    "train_step_spread_ms": MetricSpec("ms", "lower", "step time spread (p90 − p10)"),
    "train_tokens_per_s": MetricSpec("tok/s", "higher", "training tokens (or images) per second"),
    "train_peak_memory_bytes": MetricSpec("B", "lower", "peak training memory (one rank's when sharded)"),
    "train_memory_params_bytes": MetricSpec("B", "lower", "parameters and buffers as stored"),
    "train_memory_grads_bytes": MetricSpec("B", "lower", "gradients"),
    "train_memory_optimizer_bytes": MetricSpec("B", "lower", "optimizer states"),
    "train_memory_activations_bytes": MetricSpec("B", "lower", "activations a forward pass kept for backward (peak)"),
    "train_memory_model_state_bytes": MetricSpec("B", "lower", "parameters + gradients + optimizer states"),
    "train_loss": MetricSpec("", "lower", "training loss, last step"),
    "train_loss_first": MetricSpec("", "lower", "training loss, first step"),
    "eval_loss": MetricSpec("", "lower", "held-out loss after training"),
    "eval_loss_before": MetricSpec("", "lower", "held-out loss before training"),
    "trainable_params": MetricSpec("", "lower", "parameters the recipe trains"),
    "trainable_fraction": MetricSpec("", "lower", "trainable ÷ the model's parameters"),
    "train_steps": MetricSpec("", "closer_to_baseline", "optimizer steps trained"),
    "train_ranks": MetricSpec("", "closer_to_baseline", "data-parallel processes"),
    "estimated_train_memory_bytes": MetricSpec("B", "lower", "estimator's training memory for this recipe (computed)"),
    "estimated_train_activations_bytes": MetricSpec("B", "lower", "estimator's activation bytes (computed)"),
    "merge_output_rel_error": MetricSpec("", "lower", "‖merged − adapter model‖ / ‖adapter model‖ outputs, one "
                                                      "held-out batch (NF4 re-quantization's rounding for QLoRA)"),
    "estimate_error": MetricSpec("", "closer_to_baseline", "estimate ÷ measured peak − 1 (computed)"),
    # diagnostics: computed by a step while applying (phase "diagnostic")
    "layers_quantized": MetricSpec("", "closer_to_baseline", "Linear layers the step quantized"),
    "compile_time_s": MetricSpec("s", "lower", "first call of the prompt shape (compile time)"),
    "gptq_layer_error_mean": MetricSpec("", "lower", "GPTQ relative layer-output error, mean over layers"),
    "gptq_layer_error_max": MetricSpec("", "lower", "GPTQ relative layer-output error, worst layer"),
    "awq_alpha_mean": MetricSpec("", "closer_to_baseline", "AWQ chosen scaling exponent α, mean over layer groups"),
    "llm_int8_outlier_fraction_mean": MetricSpec("", "lower", "LLM.int8 input columns kept in 16 bits, mean over layers"),
    "qat_loss_first": MetricSpec("", "lower", "QAT distillation loss, first step"),
    "qat_loss_last": MetricSpec("", "lower", "QAT distillation loss, last step"),
    "onnx_export_s": MetricSpec("s", "lower", "ONNX export time"),
    "onnx_nodes": MetricSpec("", "lower", "nodes in the exported ONNX graph"),
    "onnx_quant_nodes": MetricSpec("", "closer_to_baseline", "quantization nodes in the ONNX graph (Q/DQ, integer ops)"),
    "onnx_max_abs_diff": MetricSpec("", "lower", "max |ONNX Runtime − torch| output, one calibration batch"),
    "onnx_file_bytes": MetricSpec("B", "lower", "size of the .onnx file ONNX Runtime runs"),
    "svd_rel_error_mean": MetricSpec("", "lower", "‖W − W_r‖_F / ‖W‖_F of the factorized Linears, mean over layers"),
    "svd_rel_error_max": MetricSpec("", "lower", "‖W − W_r‖_F / ‖W‖_F of the factorized Linears, worst layer"),
    "kernel_rel_error_mean": MetricSpec("", "lower", "‖K − K_r‖ / ‖K‖ of the decomposed conv kernels, mean over layers"),
    "kernel_rel_error_max": MetricSpec("", "lower", "‖K − K_r‖ / ‖K‖ of the decomposed conv kernels, worst layer"),
    "tied_bytes_saved": MetricSpec("B", "higher", "stored bytes the tied LM head no longer holds"),
    "distinct_blocks": MetricSpec("", "closer_to_baseline", "transformer blocks with their own weights after sharing"),
}


def spec(name: str) -> MetricSpec:
    if name in METRICS:
        return METRICS[name]
    unit = "B" if name.endswith("_bytes") else ""  # bytes shown with binary prefixes, estimated or not
    return MetricSpec(unit, "lower", name.replace("_", " "))


def perplexity_from_nll(total_nll: float, n_tokens: int) -> float:
    """exp(mean negative log-likelihood per predicted token)."""
    if n_tokens <= 0:
        raise ValueError("perplexity needs at least one predicted token")
    return math.exp(total_nll / n_tokens)


def kl_divergence(ref_logits: torch.Tensor, logits: torch.Tensor) -> float:
    """Mean over positions of KL(p_ref ‖ p) in nats; logits (..., V)."""
    import torch

    ref_lp = torch.log_softmax(ref_logits.double(), dim=-1)
    lp = torch.log_softmax(logits.double(), dim=-1)
    return float((ref_lp.exp() * (ref_lp - lp)).sum(-1).mean())


def top1_agreement(ref_logits: torch.Tensor, logits: torch.Tensor) -> float:
    return float((ref_logits.argmax(-1) == logits.argmax(-1)).double().mean())


def mean_cosine(ref: torch.Tensor, out: torch.Tensor) -> float:
    """Mean row-wise cosine similarity of two (N, D) embedding matrices."""
    import torch

    return float(torch.nn.functional.cosine_similarity(ref.double(), out.double(), dim=-1).mean())


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    """Spearman rank correlation of two 1-D tensors (average ranks for ties)."""
    import torch

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
