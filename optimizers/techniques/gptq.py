"""GPTQ: 4- or 3-bit group-wise weights chosen column by column with the Cholesky-based
error update of Frantar et al. 2023, layer block by layer block on calibration inputs."""
from __future__ import annotations

from pydantic import Field, field_validator

from optimizers.base import StepRecord, Technique, layer_error_figures
from optimizers.quant.calibrate import calibrated_copy
from optimizers.quant.config import GroupConfig, RuntimePeerConfig, check_bits_field
from optimizers.quant.gptq import gptq_model
from optimizers.quant.modules import check_group_size, cpu_int4_path_note
from optimizers.registry import register
from optimizers.runtimes import llama_cpp


class GptqConfig(GroupConfig, RuntimePeerConfig):
    bits: int = Field(4, description="weight bits: 4, or 3 (3-bit codes are stored in the 4-bit packed layout)")
    act_order: bool = Field(False, description="quantize columns by decreasing Hessian diagonal (helps 3-bit); groups stay contiguous")
    damp: float = Field(0.01, description="dampening added to the Hessian diagonal, as a fraction of its mean (0 < damp < 1)")
    block_size: int = Field(128, description="columns updated together before the lazy batch update (the paper's B = 128)")

    @field_validator("bits")
    @classmethod
    def _bits(cls, v: int) -> int:
        return check_bits_field(v, (3, 4))

    @field_validator("damp")
    @classmethod
    def _damp(cls, v: float) -> float:
        if not 0.0 < v < 1.0:
            raise ValueError(f"damp={v} must be in (0, 1); 0.01 is the paper's default")
        return v


@register
class Gptq(Technique):
    name = "gptq"
    needs_linear = True
    replaces_linear = True
    summary = "GPTQ: Hessian-aware 4/3-bit group-wise weights from calibration data, lower error than RTN"
    Config = GptqConfig
    needs_calibration = True

    def apply(self, workload, config) -> StepRecord:
        model, _, linears = calibrated_copy(workload, self.name, config.include_lm_head)
        group = check_group_size(linears, config.group_size)
        errors = gptq_model(model, list(linears), workload.calibration, config.bits, group,
                            config.act_order, config.damp, config.symmetric, config.block_size)
        notes: list[str] = cpu_int4_path_note(workload.model, workload.device) if config.bits == 4 else []
        peers = llama_cpp.peers_for(workload, "int4", notes) if config.compare_llama_cpp and config.bits == 4 else {}
        return StepRecord(workload.with_model(model), diagnostics=layer_error_figures("gptq_layer_error", errors) | {"group_size": float(group)},
                          details={"gptq_layer_error": errors}, peers=peers, notes=notes)
