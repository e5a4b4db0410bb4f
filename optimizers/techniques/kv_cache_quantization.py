"""KV-cache quantization: keys and values stored as int8 (or packed int4) codes with a float16
absmax scale per token and head, dequantized when attended (the int8 KV cache of vLLM and
TensorRT-LLM; KIVI, Liu et al. ICML 2024, for the 2-/4-bit end and the full-precision residual).
The cache, not the weights, is what long contexts and many concurrent requests fill. Measured in
the inference scenario: perplexity with every window fed 32 tokens at a time through the
quantized cache (so each chunk attends to quantized past), the cache's stored bytes per sequence
against the baseline's plain cache (and a 16-bit one), and decode through it."""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from optimizers.base import StepRecord, Technique, TechniqueConfig
from optimizers.registry import register
from optimizers.workloads.base import Workload


class KVCacheQuantizationConfig(TechniqueConfig):
    bits: Literal[8, 4] = Field(8, description="8: int8 codes; 4: two 4-bit codes a byte")
    residual: int = Field(0, ge=0, le=4096, description="most recent tokens kept in full precision (KIVI's residual)")


@register
class KvCacheQuantization(Technique):
    kind = "runtime"  # how the scenario stores the KV cache; the model is unchanged
    name = "kv_cache_quantization"
    summary = "int8 / int4 KV cache with per-token absmax scales: ~0.5x / ~0.27x of a 16-bit cache"
    Config = KVCacheQuantizationConfig
    tasks = frozenset({"causal_lm"})

    def apply(self, workload: Workload, config: KVCacheQuantizationConfig) -> StepRecord:
        if workload.task != "causal_lm":
            raise ValueError(f"kv_cache_quantization applies to causal LMs, not {workload.task}")
        return StepRecord(workload, settings={"kv_cache": {"kind": "quantized", "bits": config.bits,
                                                           "residual": config.residual}},
                          notes=[f"int{config.bits} K/V codes, float16 scale per token and head"
                                 + (f", the last {config.residual} tokens in full precision" if config.residual else "")
                                 + "; perplexity fed 32 tokens at a time through the cache, fidelity figures (KL, "
                                   "top-1) not measured through it"])
