"""Swap a Llama-architecture model's hot ops for the Triton kernels in `kernels/`: RMSNorm, the SwiGLU
activation, attention (through transformers' AttentionInterface) and the int8/int4 weight-only Linears
of optimizers/quant/modules.py. Each replacement is a tiny module keeping the original's tensors (the
gpt-fast pattern), and `compare_logits` bounds the swapped model by the one before the swap.
Kernel modules are imported on first call, so this module imports without Triton (STYLE.md rule 10).
"""
from __future__ import annotations

import torch
from torch import nn

from optimizers.quant.modules import QuantLinearInt4, QuantLinearInt8, set_module

ATTN_IMPLEMENTATION = "speedbook_triton"  # the name registered with transformers' AttentionInterface
SWAP_KINDS = ("rmsnorm", "swiglu", "attention", "w8a16", "w4a16")


# ---------------------------------------------------------------- replacement modules


class TritonRMSNorm(nn.Module):
    """LlamaRMSNorm's forward through `kernels.rmsnorm` (fp32 inside, returns x.dtype)."""

    def __init__(self, weight: nn.Parameter, eps: float):
        super().__init__()
        self.weight, self.eps = weight, eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from kernels.rmsnorm import rmsnorm

        return rmsnorm(x, self.weight, self.eps)

    def extra_repr(self) -> str:
        return f"{tuple(self.weight.shape)}, eps={self.eps}"


class TritonSwiGLUMLP(nn.Module):
    """LlamaMLP with its activation fused: down(swiglu(gate(x), up(x))); the three Linears are kept
    (quantized ones are swapped on their own)."""

    def __init__(self, gate_proj: nn.Module, up_proj: nn.Module, down_proj: nn.Module):
        super().__init__()
        self.gate_proj, self.up_proj, self.down_proj = gate_proj, up_proj, down_proj

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from kernels.swiglu import swiglu

        return self.down_proj(swiglu(self.gate_proj(x), self.up_proj(x)))


class TritonLinearW8A16(QuantLinearInt8):
    """QuantLinearInt8 (float activations) whose matmul is `kernels.matmul_w8a16`; same buffers."""

    @classmethod
    def from_quant(cls, q: QuantLinearInt8) -> "TritonLinearW8A16":
        new = cls(q.qweight, q.scale, q.bias)
        new.input_scale = q.input_scale
        return new

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from kernels.matmul_w8a16 import matmul_w8a16

        x = self._pre(x)
        y = matmul_w8a16(x.reshape(-1, self.in_features), self.qweight, self.scale)  # (M, N)
        return self._post(y.reshape(*x.shape[:-1], self.out_features))


class TritonLinearW4A16(QuantLinearInt4):
    """QuantLinearInt4 whose matmul is `kernels.matmul_w4a16`; same buffers (fp16 scale, uint8 zero).
    The kernel reads float scale/zero: fp32 copies are cached per storage, outside the buffers, so
    stored bytes stay the packed ones."""

    @classmethod
    def from_quant(cls, q: QuantLinearInt4) -> "TritonLinearW4A16":
        new = cls(q.packed, q.scale, q.zero, q.group_size, q.bias, q.bits)
        new.input_scale = q.input_scale
        return new

    def _float_params(self) -> tuple[torch.Tensor, torch.Tensor]:
        key = (self.scale.data_ptr(), self.zero.data_ptr(), self.scale.device)
        if getattr(self, "_cache_key", None) != key:
            self._cache_key, self._cache = key, (self.scale.float(), self.zero.float())
        return self._cache

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from kernels.matmul_w4a16 import matmul_w4a16

        x = self._pre(x)
        scale, zero = self._float_params()  # (N, K/g) fp32 each
        y = matmul_w4a16(x.reshape(-1, self.in_features), self.packed, scale, zero, self.group_size)  # (M, N)
        return self._post(y.reshape(*x.shape[:-1], self.out_features))


# ---------------------------------------------------------------- attention


def _visible(mask: torch.Tensor) -> torch.Tensor:
    """A transformers attention mask (bool: True = attend; float: 0 = attend, very negative = hidden)
    → bool (B|1, H|1, T_q, T_k), or a ValueError for a float mask carrying biases."""
    if mask.dtype == torch.bool:
        return mask
    visible = mask == 0
    if not (visible | (mask <= torch.finfo(mask.dtype).min / 2)).all():
        raise ValueError("the attention mask carries additive biases (neither 0 nor -inf); the flash kernel "
                         "cannot add them: set attention=false in triton_kernels")
    return visible


def _plain_mask(mask: torch.Tensor, t_q: int, t_k: int, causal: bool) -> int:
    """Keys to keep (a prefix of length kv_len) if `mask` is exactly the causal (or full) pattern over
    them, queries being the last t_q of kv_len positions; else a ValueError (padding, custom patterns).
    A static cache's unwritten tail is such a prefix cut."""
    visible = _visible(mask)[..., -t_k:]  # (B|1, H|1, T_q, T_k)
    used = visible.flatten(0, -2).any(dim=0)  # (T_k,) keys some query sees
    kv_len = int(used.nonzero().max()) + 1 if used.any() else t_k
    expected = torch.ones(t_q, kv_len, dtype=torch.bool, device=mask.device)
    if causal:
        if t_q > kv_len:
            raise ValueError(f"queries T_q={t_q} exceed the visible keys {kv_len}; the flash kernel needs T_q <= T_k")
        expected = expected.tril(diagonal=kv_len - t_q)  # (T_q, kv_len), True = visible
    if not torch.equal(visible[..., :kv_len], expected.expand_as(visible[..., :kv_len])) or visible[..., kv_len:].any():
        raise ValueError(
            "the attention mask hides keys the flash kernel cannot express (padding or a custom pattern); "
            "run unpadded batches (one sequence, or equal lengths without attention_mask) or set attention=false"
        )
    return kv_len


def triton_attention(
    module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
    attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None,
    is_causal: bool | None = None, **kwargs,
) -> tuple[torch.Tensor, None]:
    """transformers attention-interface function: query (B, H, T_q, D), key/value (B, H_kv, T_k, D)
    → ((B, T_q, H, D), None) via `kernels.flash_attention` (GQA native, queries = last T_q keys)."""
    from kernels.flash_attention import flash_attention

    if dropout:
        raise ValueError("the flash kernel has no attention dropout; call model.eval() before the Triton kernels")
    for unsupported in ("softcap", "sliding_window", "s_aux"):
        if kwargs.get(unsupported) is not None:
            raise ValueError(f"the flash kernel does not implement {unsupported}; set attention=false in triton_kernels")
    causal = bool(is_causal if is_causal is not None else getattr(module, "is_causal", True))
    if attention_mask is not None:
        kv_len = _plain_mask(attention_mask, query.shape[2], key.shape[2], causal)
        key, value = key[:, :, :kv_len], value[:, :, :kv_len]  # (B, H_kv, kv_len, D)
    out = flash_attention(query, key, value, causal=causal, sm_scale=scaling)  # (B, H, T_q, D)
    return out.transpose(1, 2).contiguous(), None  # (B, T_q, H, D), no attention weights


def register_attention() -> None:
    """Register the attention function and, for its masks, transformers' sdpa mask builder (which
    returns None for plain causal attention and a bool mask when padding is present)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(ATTN_IMPLEMENTATION, triton_attention)
    AttentionMaskInterface.register(ATTN_IMPLEMENTATION, sdpa_mask)


# ---------------------------------------------------------------- swapping


def _llama_classes():
    from transformers.models.llama.modeling_llama import LlamaAttention, LlamaMLP, LlamaRMSNorm

    return LlamaRMSNorm, LlamaMLP, LlamaAttention


def _is_silu(act: nn.Module) -> bool:
    return type(act).__name__ in ("SiLU", "SiLUActivation")


def swap_kernels(model: nn.Module, *, rmsnorm: bool = True, swiglu: bool = True, attention: bool = True,
                 quantized_linears: bool = True) -> dict[str, int]:
    """Swap in place (callers deep-copy first); returns modules swapped per kind (SWAP_KINDS)."""
    from kernels.flash_attention import HEAD_DIMS

    norm_cls, mlp_cls, attn_cls = _llama_classes()
    counts = dict.fromkeys(SWAP_KINDS, 0)
    for name, mod in list(model.named_modules()):
        if rmsnorm and isinstance(mod, norm_cls):
            set_module(model, name, TritonRMSNorm(mod.weight, mod.variance_epsilon))
            counts["rmsnorm"] += 1
        elif swiglu and isinstance(mod, mlp_cls) and _is_silu(mod.act_fn):
            set_module(model, name, TritonSwiGLUMLP(mod.gate_proj, mod.up_proj, mod.down_proj))
            counts["swiglu"] += 1
        elif quantized_linears and type(mod) is QuantLinearInt8 and not mod.act_int8:
            set_module(model, name, TritonLinearW8A16.from_quant(mod))
            counts["w8a16"] += 1
        elif quantized_linears and type(mod) is QuantLinearInt4 and mod.group_size % 16 == 0:
            set_module(model, name, TritonLinearW4A16.from_quant(mod))
            counts["w4a16"] += 1
    layers = [m for m in model.modules() if isinstance(m, attn_cls)]
    if attention and layers:
        bad = sorted({m.head_dim for m in layers} - set(HEAD_DIMS))
        if bad:
            raise ValueError(f"head_dim {bad} is not one the flash kernel supports {HEAD_DIMS}; set attention=false")
        register_attention()
        model.set_attn_implementation(ATTN_IMPLEMENTATION)
        counts["attention"] = len(layers)
    return counts


# ---------------------------------------------------------------- the output check


@torch.inference_mode()
def lm_logits(model: nn.Module, input_ids: torch.Tensor) -> torch.Tensor:
    """Logits at every position (B, T, V) fp32: a prefill of T-1 tokens into the KV cache, then a
    one-token decode step from it, so both the T_q = T_k and T_q < T_k attention paths are checked."""
    prefill = model(input_ids=input_ids[:, :-1], use_cache=True)
    step = model(input_ids=input_ids[:, -1:], cache=prefill.cache, use_cache=True)  # transformers 5: `cache`
    return torch.cat([prefill.logits, step.logits], dim=1).float()  # (B, T, V)


def compare_logits(ref: torch.Tensor, out: torch.Tensor) -> dict[str, float]:
    """max |Δlogit|, ||Δ|| / ||ref|| and the share of positions whose argmax token agrees."""
    diff = (out - ref).abs()
    return {
        "max_abs_logit_diff": diff.max().item(),
        "rel_error": (torch.linalg.vector_norm(out - ref) / torch.linalg.vector_norm(ref).clamp(min=1e-12)).item(),
        "top1_agreement": (out.argmax(-1) == ref.argmax(-1)).float().mean().item(),
        "ref_max_abs_logit": ref.abs().max().item(),
    }
