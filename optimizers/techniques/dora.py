"""DoRA (Liu et al. 2024, arXiv:2402.09353): the weight as magnitude × direction, LoRA on the
direction and a trained magnitude vector per output (peft's ``use_dora``); merged back like LoRA.
It computes the adapted weight's column norms every step, so it costs more activation memory
and time than LoRA (measured)."""
from __future__ import annotations

from optimizers.registry import register
from optimizers.techniques.lora import Lora, LoraConfig


class DoraConfig(LoraConfig):
    pass


@register
class Dora(Lora):
    name = "dora"
    summary = "weight-decomposed LoRA: trained magnitude plus a low-rank direction update (peft)"
    Config = DoraConfig
    adapter_kind = "dora"
