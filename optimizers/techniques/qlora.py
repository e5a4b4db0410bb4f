"""QLoRA (Dettmers et al. 2023, arXiv:2305.14314): LoRA adapters on a frozen 4-bit NormalFloat
base. The targeted projections become Speedbook's NF4 layers (block 64, double-quantized absmax;
already NF4 after an ``nf4`` step), dequantized per call in the forward pass, and peft trains the
adapters on top. On merge the adapter's update is added to the dequantized weight and the sum
re-quantized to NF4 — what a QLoRA model deploys as — so its stored bytes stay ~4.1 bits a
weight and the re-quantization's quality cost is in the measured perplexity. (bitsandbytes'
paged optimizers are a CUDA feature; not used here.)"""
from __future__ import annotations

from pydantic import Field

from optimizers.registry import register
from optimizers.techniques.lora import Lora, LoraConfig

ALL_PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


class QloraConfig(LoraConfig):
    targets: list[str] = Field(ALL_PROJECTIONS, min_length=1, description="projections made NF4 and adapted "
                                                                          "(QLoRA adapts every linear layer)")


@register
class Qlora(Lora):
    name = "qlora"
    summary = "LoRA on a frozen NF4 base (Speedbook's NF4 layers), merged and re-quantized afterwards"
    Config = QloraConfig
    adapter_kind = "qlora"
    tasks = frozenset({"causal_lm"})
