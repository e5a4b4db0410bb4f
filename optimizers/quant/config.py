"""Config fields every quantization technique shares, so forms and playbooks read alike."""
from __future__ import annotations

from pydantic import Field, field_validator

from optimizers.base import TechniqueConfig


class QuantConfig(TechniqueConfig):
    include_lm_head: bool = Field(
        False, description="also quantize the LM head (output embedding); off by default because it is the most sensitive layer"
    )


class RuntimePeerConfig(QuantConfig):
    compare_llama_cpp: bool = Field(
        True, description="on a workload whose weights come from a GGUF file (smollm2-135m), also run llama.cpp on "
        "the same weights in its matching formats (Q4_1 and Q4_K_M beside int4, Q8_0 beside int8), measured in the "
        "same run; needs the optional llama-cpp-python, and is skipped with a note without it")


class PeerConfig(RuntimePeerConfig):
    compare_torchao: bool = Field(
        True, description="also quantize the same model with torchao's implementation and measure it in the same run, side by side"
    )


class GroupConfig(QuantConfig):
    group_size: int | None = Field(
        None, description="input columns sharing one scale and zero point; must divide every quantized layer's "
        "in_features. Unset: 128 where it divides every layer, else 64, else 32 (the step records the size used)")
    symmetric: bool = Field(False, description="symmetric codes (zero point fixed at the middle) instead of min/max asymmetric")

    @field_validator("group_size")
    @classmethod
    def _group(cls, v: int | None) -> int | None:
        if v is not None and (v <= 0 or v % 2):
            raise ValueError(f"group_size={v} must be a positive even number dividing in_features; try 128, 64 or 32")
        return v



def check_bits_field(v: int, allowed: tuple[int, ...]) -> int:
    if v not in allowed:
        raise ValueError(f"bits={v} is not supported; choose one of {list(allowed)}")
    return v
