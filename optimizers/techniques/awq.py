"""AWQ: activation-aware per-channel scales s = mean|x|^α (α searched on a grid per group of
Linears sharing an input), folded into the preceding norm, then group-wise int4 (Lin et al. 2024)."""
from __future__ import annotations

from pydantic import Field, field_validator

from optimizers.base import StepRecord, Technique, layer_error_figures
from optimizers.quant.awq import awq_model
from optimizers.quant.calibrate import calibrated_copy
from optimizers.quant.config import GroupConfig, RuntimePeerConfig, check_bits_field
from optimizers.quant.modules import check_group_size, cpu_int4_path_note
from optimizers.registry import register
from optimizers.runtimes import llama_cpp


class AwqConfig(GroupConfig, RuntimePeerConfig):
    bits: int = Field(4, description="weight bits: 4, or 3 (stored in the 4-bit packed layout)")
    grid: int = Field(20, description="number of α values tried in [0, 1): α = i / grid; α = 0 is plain RTN")
    scale_unfoldable: bool = Field(False, description="also scale Linears whose 1/s cannot fold into a preceding op (o_proj under GQA) via an explicit input scale; not exportable to compressed-tensors")

    @field_validator("bits")
    @classmethod
    def _bits(cls, v: int) -> int:
        return check_bits_field(v, (3, 4))

    @field_validator("grid")
    @classmethod
    def _grid(cls, v: int) -> int:
        if not 1 <= v <= 100:
            raise ValueError(f"grid={v} must be between 1 and 100; 20 is llm-awq's default")
        return v


@register
class Awq(Technique):
    name = "awq"
    needs_linear = True
    replaces_linear = True
    summary = "AWQ: activation-aware channel scaling before group-wise int4; no weight updates"
    Config = AwqConfig
    needs_calibration = True

    def apply(self, workload, config) -> StepRecord:
        model, _, linears = calibrated_copy(workload, self.name, config.include_lm_head)
        group = check_group_size(linears, config.group_size)
        report = awq_model(model, list(linears), workload.calibration, config.bits, group,
                           config.grid, config.symmetric, config.scale_unfoldable)
        alphas = {n: r["alpha"] for n, r in report.items()}
        notes: list[str] = cpu_int4_path_note(workload.model, workload.device) if config.bits == 4 else []
        peers = llama_cpp.peers_for(workload, "int4", notes) if config.compare_llama_cpp and config.bits == 4 else {}
        return StepRecord(workload.with_model(model), diagnostics=layer_error_figures("awq_alpha", alphas) | {"group_size": float(group)},
                          details={"awq_alpha": alphas, "awq_report": report}, peers=peers, notes=notes)
