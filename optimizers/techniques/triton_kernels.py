"""Triton kernels: swap a Llama model's RMSNorm, SwiGLU activation, attention and int8/int4 weight-only
Linears for the fused kernels in `kernels/`, and check the logits against the model before the swap.
On CUDA the swapped model is returned (the pipeline measures its speed); on a CPU worker with
TRITON_INTERPRET=1 only the correctness check runs. Source: Tillet et al. 2019 (Triton), Dao 2023.
"""
from __future__ import annotations

import copy
import importlib.util

import torch
from pydantic import Field

from optimizers.base import StepRecord, Target, Technique, TechniqueConfig, Verdict
from optimizers.kernel_swap import compare_logits, lm_logits, swap_kernels
from optimizers.registry import register
from optimizers.workloads.base import LMEval, Workload


class TritonKernelsConfig(TechniqueConfig):
    rmsnorm: bool = Field(True, description="swap LlamaRMSNorm for the fused kernels.rmsnorm")
    swiglu: bool = Field(True, description="fuse the MLP activation silu(gate) * up with kernels.swiglu (Linears kept)")
    attention: bool = Field(True, description="route attention through kernels.flash_attention (causal, GQA; refuses padded batches)")
    quantized_linears: bool = Field(
        True, description="run int8/int4 weight-only Linears (int8_weight_only, int4_weight_only, gptq, awq) "
                          "through matmul_w8a16 / matmul_w4a16")
    check_tokens: int = Field(8, ge=2, le=512, description="tokens per sequence in the correctness check (2 sequences); "
                                                           "keep it tiny on CPU, Triton's interpreter is slow")
    atol: float = Field(1e-3, ge=0, description="check passes when max |Δlogit| <= atol + rtol * max |reference logit|")
    rtol: float = Field(1e-2, ge=0, description="relative part of that bound; loosen for 16-bit models on a GPU")


def _check_ids(workload: Workload, tokens: int) -> torch.Tensor:
    """(2, tokens) ids: held-out text when the workload has it, else seeded random ids."""
    ev = workload.eval
    if isinstance(ev, LMEval) and ev.token_ids.numel() >= 2 * tokens:
        ids = ev.token_ids[: 2 * tokens].reshape(2, tokens)
    else:
        g = torch.Generator().manual_seed(0)
        ids = torch.randint(0, workload.model.config.vocab_size, (2, tokens), generator=g)
    return ids.to(workload.device)


@register
class TritonKernels(Technique):
    name = "triton_kernels"
    summary = "fused Triton RMSNorm, SwiGLU, flash attention and W8A16/W4A16 matmuls; output checked against the model"
    Config = TritonKernelsConfig
    tasks = frozenset({"causal_lm"})

    def check(self, target: Target, config: TechniqueConfig | None = None) -> Verdict:
        from kernels import _common

        if target.task is not None and target.task not in self.tasks:
            return Verdict("refused", f"triton_kernels swaps Llama decoder blocks (RMSNorm, SwiGLU, causal "
                                      f"attention); a {target.task} model has none to swap")
        if importlib.util.find_spec("triton") is None:
            return Verdict("refused", "Triton is not installed: `pip install triton` (Linux), then use a cuda worker")
        if target.device == "cuda":
            return Verdict("runs")
        if not _common.interpreter_active():
            return Verdict("needs_gpu", "the Triton kernels need a CUDA GPU for speed: set TRITON_INTERPRET=1 for a "
                                        "correctness check, or use a cuda worker")
        return Verdict("runs", "CPU with TRITON_INTERPRET=1: a correctness check only; speed needs a GPU")

    def apply(self, workload: Workload, config: TritonKernelsConfig) -> StepRecord:
        on_gpu = workload.device.startswith("cuda")
        ref_model = workload.model if on_gpu else copy.deepcopy(workload.model).float()  # interpreter: fp32
        model = copy.deepcopy(ref_model).eval()
        counts = swap_kernels(model, rmsnorm=config.rmsnorm, swiglu=config.swiglu, attention=config.attention,
                              quantized_linears=config.quantized_linears)
        if not any(counts.values()):
            raise ValueError("triton_kernels found nothing to swap: no LlamaRMSNorm, LlamaMLP, LlamaAttention or "
                             "weight-only QuantLinear in this model (or every swap is switched off)")
        ids = _check_ids(workload, config.check_tokens)  # (2, T)
        figures = {**compare_logits(lm_logits(ref_model, ids), lm_logits(model, ids)),
                   "modules_swapped": float(sum(counts.values()))}
        bound = config.atol + config.rtol * figures.pop("ref_max_abs_logit")
        swapped = ", ".join(f"{k} {v}" for k, v in counts.items() if v)
        summary = (f"checked on 2x{config.check_tokens} tokens (prefill + one decode step) in "
                   f"{next(model.parameters()).dtype}: max |Δlogit| {figures['max_abs_logit_diff']:.3g} "
                   f"(bound {bound:.3g}), rel error {figures['rel_error']:.3g}, "
                   f"top-1 agreement {figures['top1_agreement']:.3f}; swapped {swapped}")
        if figures["max_abs_logit_diff"] > bound:
            raise ValueError(f"triton_kernels output check failed: {summary}. Switch swaps off one by one to find "
                             "the culprit, or loosen atol/rtol for a 16-bit model")
        if on_gpu:
            return StepRecord(workload.with_model(model), notes=[summary], diagnostics=figures)
        note = f"correctness check only (Triton interpreter on CPU); speed needs a GPU worker. {summary}"
        return StepRecord(workload, notes=[note], check_metrics=figures)
