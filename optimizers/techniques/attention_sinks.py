"""Attention sinks (StreamingLLM, Xiao et al., ICLR 2024): the KV cache keeps the first ``sink``
tokens — which soak up attention mass whatever they say — and the most recent ``window``, so
memory is bounded by ``sink + window`` tokens at any length; positions are by index within the
cache (cached keys re-rotated as tokens are evicted, ``optimizers.decoding.kv_cache.SinkCache``).
Measured in the inference scenario: perplexity with every window fed 32 tokens at a time through
the bounded cache (what the model loses by forgetting the middle), the cache's peak bytes per
sequence against the baseline's plain cache, and decode through it."""
from __future__ import annotations

from pydantic import Field

from optimizers.base import StepRecord, Technique, TechniqueConfig
from optimizers.registry import register
from optimizers.workloads.base import LMEval, Workload


class AttentionSinksConfig(TechniqueConfig):
    sink: int = Field(4, ge=0, le=1024, description="first tokens always kept (StreamingLLM uses 4)")
    window: int = Field(124, ge=1, le=1_000_000, description="most recent tokens kept; below the evaluation window "
                                                             "(256 tokens) so the bound shows in perplexity")


@register
class AttentionSinks(Technique):
    kind = "runtime"  # a KV-cache policy the scenario applies; the model is unchanged
    name = "attention_sinks"
    summary = "StreamingLLM cache: 4 sink tokens + a recent window, memory bounded at any length"
    Config = AttentionSinksConfig
    tasks = frozenset({"causal_lm"})

    def apply(self, workload: Workload, config: AttentionSinksConfig) -> StepRecord:
        if workload.task != "causal_lm":
            raise ValueError(f"attention_sinks applies to causal LMs, not {workload.task}")
        notes = [f"{config.sink} sink tokens + the last {config.window}: at most {config.sink + config.window} tokens "
                 "cached; perplexity fed 32 tokens at a time through the cache, fidelity figures not measured through it"]
        if isinstance(workload.eval, LMEval) and config.sink + config.window >= workload.eval.window:
            notes.append(f"sink + window = {config.sink + config.window} ≥ the {workload.eval.window}-token evaluation "
                         "window: nothing is evicted, so perplexity cannot move; lower params.window to see the cost")
        return StepRecord(workload, settings={"kv_cache": {"kind": "sinks", "sink": config.sink,
                                                           "window": config.window}}, notes=notes)
