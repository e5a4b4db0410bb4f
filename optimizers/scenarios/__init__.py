"""Scenarios: the protocol a run is measured under, each with its own metric vocabulary and the
settings steps it understands (DESIGN.md "Scenarios"). ``inference`` is the harness in
``optimizers.measure``; ``serving`` serves a seeded request trace (``serving.py``, the trace in
``trace.py``); ``training`` trains K steps of the run's recipe on the workload's training split
(``training.py``, the loops in ``optimizers.training``)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Literal

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
    # settings it recognises but does not apply yet: the step is skipped with this reason, the rest runs
    not_applied: dict[str, str] = field(default_factory=dict)


INFERENCE_METRICS = (
    "stored_bytes", "bits_per_param", "stored_bytes_vs_16bit", "peak_memory_bytes", "latency_ms",
    "latency_spread_ms", "prefill_tokens_per_s", "decode_tokens_per_s", "perplexity", "accuracy", "answer_accuracy",
    "kl_divergence",
    "top1_agreement", "output_rel_error", "embedding_cosine", "similarity_spearman", "pair_spearman", "sqnr_db",
    "decode_bandwidth_gb_per_s", "decode_bandwidth_fraction", "kv_cache_bytes", "kv_cache_bytes_vs_16bit",
    "spec_speedup", "spec_acceptance_rate", "greedy_match",
)
SERVING_METRICS = (
    "throughput_tokens_per_s", "requests_per_s", "ttft_ms_p50", "ttft_ms_p95", "tpot_ms_p50", "tpot_ms_p95",
    "e2e_ms_p50", "e2e_ms_p95", "kv_cache_bytes_reserved", "kv_cache_bytes_used", "kv_cache_used_fraction",
    "output_exact_fraction", "output_prefix_agreement", "stored_bytes", "bits_per_param", "stored_bytes_vs_16bit",
    "perplexity", "kl_divergence", "top1_agreement", "output_rel_error",
)
SERVING_SETTINGS = frozenset({"continuous_batching", "paged_kv_cache", "chunked_prefill", "prefix_caching",
                              "static_batching", "speculative_decoding"})
TRAINING_METRICS = (
    "train_step_ms", "train_step_spread_ms", "train_tokens_per_s", "train_peak_memory_bytes",
    "train_memory_params_bytes", "train_memory_grads_bytes", "train_memory_optimizer_bytes",
    "train_memory_activations_bytes", "train_memory_model_state_bytes", "train_loss", "train_loss_first",
    "eval_loss", "eval_loss_before", "trainable_params", "trainable_fraction", "estimated_train_memory_bytes",
    "estimate_error", "merge_output_rel_error", "stored_bytes", "bits_per_param", "stored_bytes_vs_16bit",
    "perplexity", "accuracy", "pair_spearman",
)
TRAINING_SETTINGS = frozenset({"bf16_mixed_precision", "fp16_mixed_precision", "activation_checkpointing",
                               "gradient_accumulation", "adam_8bit", "adam_4bit", "lora", "dora", "qlora", "fsdp",
                               "zero", "data_pruning", "curriculum_learning"})

SCENARIOS: dict[str, Scenario] = {
    "inference": Scenario("inference", "single-request inference: bytes, quality, prefill/decode, peak memory, fidelity",
                          INFERENCE_METRICS, frozenset({"torch_compile", "cuda_graphs", "speculative_decoding",
                                                         "kv_cache_quantization", "attention_sinks"}), built=True),
    "serving": Scenario("serving", "a seeded request trace under load: throughput, TTFT/TPOT percentiles, KV-cache bytes",
                        SERVING_METRICS, SERVING_SETTINGS, built=True,
                        not_applied={
                            "torch_compile": "the serving engines run the model eagerly; compiled serving "
                                             "(ContinuousBatchingConfig compile levels) is not measured yet",
                            "cuda_graphs": "the serving engines run the model eagerly; CUDA-graph capture in "
                                           "continuous batching (use_cuda_graph) is not measured yet",
                            "kv_cache_quantization": "transformers' paged cache keeps K/V in the model's dtype; the "
                                                     "quantized cache's bytes and perplexity are measured in the "
                                                     "inference scenario (speedbook run <playbook> --scenario inference)",
                            "attention_sinks": "transformers' paged cache has no sink/window eviction; the sink "
                                               "cache is measured in the inference scenario",
                        }),
    "training": Scenario("training", "K steps of a training recipe: step time, tokens/s, memory by kind, loss, "
                                     "and the trained model's quality",
                         TRAINING_METRICS, TRAINING_SETTINGS, built=True,
                         not_applied={
                             "torch_compile": "the training loop runs eagerly; a compiled training step is not "
                                              "measured yet (torch_compile is measured in the inference scenario)",
                             "flash_attention": "the training loop runs the model's own attention (sdpa); "
                                                "FlashAttention kernels are measured in the inference scenario "
                                                "on a CUDA worker",
                             **{name: "a serving setting: this run is judged in the training scenario; measure it "
                                      "with --scenario serving" for name in SERVING_SETTINGS},
                             **{name: "an inference setting: this run is judged in the training scenario; measure "
                                      "it with --scenario inference"
                                for name in ("cuda_graphs", "kv_cache_quantization", "attention_sinks", "sdpa")},
                         }),
}


def default_scenario(goals: str | Iterable[str] | None, task: str | None, steps: Iterable[str] = ()) -> str:
    """From a playbook's ``when.goal``: serve → serving for a causal LM, pretrain/finetune →
    training; without such a goal, a causal-LM playbook with a serving-only setting among its
    ``steps`` (continuous batching, a paged cache…) → serving; anything else → inference."""
    goals = {goals} if isinstance(goals, str) else set(goals or ())
    if goals & {"pretrain", "finetune"}:
        return "training"
    lm = task in ("causal_lm", None)
    if "serve" in goals and lm:
        return "serving"
    if lm and not goals and set(steps) & (SERVING_SETTINGS - SCENARIOS["inference"].settings):
        return "serving"
    return "inference"


def scenario(name: str) -> Scenario:
    if name not in SCENARIOS:
        raise ValueError(f"scenario={name!r} is not valid; choose one of {', '.join(SCENARIOS)}")
    return SCENARIOS[name]


Measurer = Callable[..., Any]


def measurer(name: str, trace: Any = None, training: Any = None) -> Measurer:
    """The scenario's measurement: ``fn(workload, reference=None, runtime={...}) -> Measurement``
    (the training scenario's also takes ``progress=fn(step, steps, loss)``)."""
    if name == "training":
        from functools import partial

        from optimizers.scenarios.training import measure_training

        return partial(measure_training, training=training)
    if name == "serving":
        from functools import partial

        from optimizers.scenarios.serving import measure_serving

        return partial(measure_serving, trace=trace)
    if name == "inference":
        from optimizers.measure import measure

        return measure
    raise ValueError(f"the {name} scenario has no measurement yet")
