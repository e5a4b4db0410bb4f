"""FlashAttention-2 (Dao, ICLR 2024): exact attention in SRAM tiles with an online softmax, never
writing the L×L scores, through transformers' ``attn_implementation="flash_attention_2"``. CUDA
only (compute capability ≥ 8.0, the ``flash-attn`` package, fp16/bf16 activations): on a CPU the
verdict says so, and ``sdpa`` is the nearest thing that runs here."""
from __future__ import annotations

import importlib.util

from optimizers.base import StepRecord, Target, Technique, TechniqueConfig, Verdict
from optimizers.registry import register
from optimizers.techniques.sdpa import with_attention
from optimizers.workloads.base import Workload


class FlashAttentionConfig(TechniqueConfig):
    pass


def flash_attn_missing() -> str | None:
    if importlib.util.find_spec("flash_attn") is None:
        return ("the flash-attn package is not installed on this worker: pip install flash-attn --no-build-isolation "
                "in the GPU image (it builds against the image's torch and CUDA)")
    return None


@register
class FlashAttention(Technique):
    name = "flash_attention"
    summary = "FlashAttention-2 kernels (CUDA, cc ≥ 8.0) through attn_implementation"
    Config = FlashAttentionConfig
    tasks = frozenset({"causal_lm", "encoder"})

    def check(self, target: Target, config: TechniqueConfig | None = None) -> Verdict:
        verdict = super().check(target, config)
        if not verdict.runnable:
            return verdict
        if target.capability is not None and target.capability < (8, 0):
            return Verdict("needs_gpu", f"FlashAttention-2 needs compute capability ≥ 8.0 (Ampere or newer); this GPU "
                                        f"is {target.capability[0]}.{target.capability[1]}: use sdpa")
        missing = flash_attn_missing()
        if missing:
            return Verdict("refused", missing)
        return Verdict("runs", "needs fp16/bf16 activations: run with a bf16 baseline (the CUDA default)")

    def apply(self, workload: Workload, config: FlashAttentionConfig) -> StepRecord:
        if not workload.device.startswith("cuda"):
            raise ValueError("flash_attention runs on CUDA GPUs; on a CPU use sdpa")
        out, before = with_attention(workload, "flash_attention_2")
        return StepRecord(out, notes=[f"attention backend {before} → flash_attention_2"])
