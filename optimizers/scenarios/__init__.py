"""Scenarios: the protocol a run is measured under, each with its own metric vocabulary and the
settings steps it understands (DESIGN.md "Scenarios"). ``inference`` is the harness in
``optimizers.measure``; ``serving`` (a seeded request trace under continuous batching) and
``training`` (K steps of a recipe) are declared here with their metrics so playbooks, gates and
the UI speak of them now, and are refused with the reason until their protocols are built."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Literal

ScenarioName = Literal["inference", "serving", "training"]
StepKind = Literal["transform", "runtime", "recipe"]  # model transform | runtime setting | training-recipe setting


@dataclass(frozen=True)
class Scenario:
    name: str
    summary: str
    metrics: tuple[str, ...]  # the names its gates may use (optimizers.metrics has units)
    settings: frozenset[str]  # runtime / recipe steps (technique names) it knows how to apply
    built: bool
    not_built: str = ""  # why it cannot run yet, and what to do meanwhile


INFERENCE_METRICS = (
    "stored_bytes", "bits_per_param", "stored_bytes_vs_16bit", "peak_memory_bytes", "latency_ms",
    "latency_spread_ms", "prefill_tokens_per_s", "decode_tokens_per_s", "perplexity", "accuracy", "answer_accuracy",
    "kl_divergence",
    "top1_agreement", "output_rel_error", "embedding_cosine", "similarity_spearman", "pair_spearman", "sqnr_db",
    "decode_bandwidth_gb_per_s", "decode_bandwidth_fraction",
)
SERVING_METRICS = (
    "throughput_tokens_per_s", "ttft_ms_p50", "ttft_ms_p95", "tpot_ms_p50", "tpot_ms_p95",
    "kv_cache_bytes_reserved", "kv_cache_bytes_used", "output_exact_fraction", "stored_bytes",
)
TRAINING_METRICS = (
    "train_step_ms", "train_tokens_per_s", "train_peak_memory_bytes", "train_memory_params_bytes",
    "train_memory_grads_bytes", "train_memory_optimizer_bytes", "train_memory_activations_bytes", "train_loss",
    "eval_loss", "trainable_params",
)

SCENARIOS: dict[str, Scenario] = {
    "inference": Scenario("inference", "single-request inference: bytes, quality, prefill/decode, peak memory, fidelity",
                          INFERENCE_METRICS, frozenset({"torch_compile", "speculative_decoding"}), built=True),
    "serving": Scenario("serving", "a seeded request trace under load: throughput, TTFT/TPOT percentiles, KV-cache bytes",
                        SERVING_METRICS, frozenset(), built=False,
                        not_built="the serving scenario (a seeded request trace under continuous batching) is not built "
                                  "yet; run with scenario inference to measure this playbook's model transforms one "
                                  "request at a time"),
    "training": Scenario("training", "K steps of a training recipe: step time, tokens/s, memory by kind, loss",
                         TRAINING_METRICS, frozenset(), built=False,
                         not_built="the training scenario (K measured steps of a recipe) is not built yet, so no "
                                   "training playbook is judged on inference figures meanwhile"),
}


def default_scenario(goals: str | Iterable[str] | None, task: str | None) -> str:
    """From a playbook's ``when.goal``: serve → serving for a causal LM, pretrain/finetune →
    training, anything else (edge, or no goal) → inference."""
    goals = {goals} if isinstance(goals, str) else set(goals or ())
    if goals & {"pretrain", "finetune"}:
        return "training"
    if "serve" in goals and task in ("causal_lm", None):
        return "serving"
    return "inference"


def scenario(name: str) -> Scenario:
    if name not in SCENARIOS:
        raise ValueError(f"scenario={name!r} is not valid; choose one of {', '.join(SCENARIOS)}")
    return SCENARIOS[name]
