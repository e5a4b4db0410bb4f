"""Config fields every quantization technique shares, so forms and playbooks read alike."""
from __future__ import annotations

from pydantic import Field, field_validator

from optimizers.base import TechniqueConfig


class QuantConfig(TechniqueConfig):
    include_lm_head: bool = Field(
        False, description="also quantize the LM head (output embedding); off by default because it is the most sensitive layer"
    )


class PeerConfig(QuantConfig):
    compare_torchao: bool = Field(
        True, description="also quantize the same model with torchao's implementation and measure it in the same run, side by side"
    )


class GroupConfig(QuantConfig):
    group_size: int = Field(128, description="input columns sharing one scale and zero point; must divide every quantized layer's in_features (128, 64 or 32)")
    symmetric: bool = Field(False, description="symmetric codes (zero point fixed at the middle) instead of min/max asymmetric")

    @field_validator("group_size")
    @classmethod
    def _group(cls, v: int) -> int:
        if v <= 0 or v % 2:
            raise ValueError(f"group_size={v} must be a positive even number dividing in_features; try 128, 64 or 32")
        return v



def check_bits_field(v: int, allowed: tuple[int, ...]) -> int:
    if v not in allowed:
        raise ValueError(f"bits={v} is not supported; choose one of {list(allowed)}")
    return v
